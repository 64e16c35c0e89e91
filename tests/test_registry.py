"""Every "name -> thing" table is a Registry, and each refuses an unknown name with the closest one."""

import pytest

from cnnlab.errors import CnnlabError, SpecError
from cnnlab.model.layers import LAYERS, Conv2D
from cnnlab.model.spec import PRESETS, list_presets, spec_from_dict
from cnnlab.registry import Registry
from cnnlab.train.losses import LOSSES
from cnnlab.train.optimizers import OPTIMIZERS
from cnnlab.train.recipes import RECIPES, get_recipe
from cnnlab.train.schedules import SCHEDULES

PRESET_NAMES = ("airbench, airbench_medium, airbench_small, photonet, photonet_large, photonet_small, resnet_small, "
                "seed, tinyvgg, vgg_bn")


@pytest.mark.parametrize("registry, typo, sentence", [
    (LAYERS, "Conv2d", "unknown layer type 'Conv2d'; did you mean 'Conv2D'? (see `cnnlab layers`)"),
    (PRESETS, "resnet_smal", f"unknown preset 'resnet_smal'; did you mean 'resnet_small'? (known: {PRESET_NAMES})"),
    (RECIPES, "airbenh", "unknown recipe 'airbenh'; did you mean 'airbench'? (known: airbench, photo)"),
    (OPTIMIZERS, "adamm", "unknown optimizer 'adamm'; did you mean 'adam'? (known: adam, adamw, sgd)"),
    (SCHEDULES, "cosin", "unknown scheduler 'cosin'; did you mean 'cosine'? "
                         "(known: none, cosine, onecycle, step, plateau, triangle)"),
    (LOSSES, "cross_entropi", "unknown loss 'cross_entropi'; did you mean 'cross_entropy'? (known: cross_entropy)"),
])
def test_each_registry_refuses_an_unknown_name_with_a_did_you_mean(registry, typo, sentence):
    assert isinstance(registry, Registry) and typo not in registry
    with pytest.raises(CnnlabError) as refused:
        registry[typo]
    assert str(refused.value) == sentence


def test_entries_build_what_the_name_stands_for():
    assert LAYERS["Conv2D"].build is Conv2D and "Conv2D" in LAYERS.names()
    assert PRESETS["tinyvgg"].build().name == "tinyvgg" and list_presets() == PRESET_NAMES.split(", ")
    assert get_recipe("airbench") is RECIPES["airbench"].build()
    assert get_recipe("airbench").options["model"] == "airbench"
    assert SCHEDULES["step"].build(0.5, 0.0, 7, 3, 0.5) == 0.25  # epoch 7, halved every 3: twice


def test_a_name_with_nothing_close_lists_the_known_ones():
    with pytest.raises(CnnlabError, match=r"^unknown optimizer 'lion' \(known: adam, adamw, sgd\)$"):
        OPTIMIZERS["lion"]
    with pytest.raises(ValueError, match=r"^must be one of adam, adamw, sgd, got 'adamm'; did you mean 'adam'\?$"):
        OPTIMIZERS.check("adamm")  # the config's (pydantic's) form


def test_a_spec_names_the_layer_and_the_closest_type():
    with pytest.raises(SpecError, match=r"^<dict>: layer 2: unknown layer type 'Dens'; did you mean 'Dense'\? "
                                        r"\(see `cnnlab layers`\)$"):
        spec_from_dict({"input": [8, 8, 1], "layers": ["Flatten", {"Dens": {"units": 2}}]})


def test_a_registry_declares_each_name_once():
    reg = Registry("colour")
    reg.register("red", "the colour of a ripe tomato")(lambda: (255, 0, 0))
    assert len(reg) == 1 and reg["red"].build() == (255, 0, 0) and reg["red"].help == "the colour of a ripe tomato"
    with pytest.raises(ValueError, match="colour 'red' is registered twice"):
        reg.add("red", "again", lambda: None)
