"""Parameter counts and shapes, checked against values computed by hand (Keras' rules)."""

from __future__ import annotations

import pytest
import torch

import cnnlab
from cnnlab.model.summary import summary


def spec(layers, input=(32, 32, 3)):
    return {"input": list(input), "layers": layers}


def torch_count(model) -> int:
    """What torch actually holds: weights plus BN's running mean/var (not the int counter)."""
    return sum(t.numel() for t in model.state_dict().values() if t.dtype.is_floating_point)


def rows(s):
    return {r.name: r for r in s.layers}


def test_seed_matches_the_lecture():
    s = summary("seed")
    first = s.layers[0]
    assert (first.type, first.params, first.formula) == ("Conv2D", 896, "(3*3*3+1)*32 = 896")
    assert s.total_params == 3_938_570
    assert s.trainable_params == 3_938_570 and s.non_trainable_params == 0
    assert [r.output_shape for r in s.layers] == [(62, 62, 32), (31, 31, 32), (30752,), (128,), (10,)]


def test_tinyvgg_matches_cnn_explainer():
    s = summary("tinyvgg")
    assert s.total_params == 19_920
    assert [r.params for r in s.layers] == [280, 910, 0, 910, 910, 0, 0, 16_910]
    assert s.layers[-2].output_shape == (13 * 13 * 10,)


def test_vgg_bn_totals_by_hand():
    """presets/vgg_bn.yaml at 64x64x3, 10 classes: six 3x3 convs without bias, each with BN."""
    convs = [(3, 32), (32, 32), (32, 64), (64, 64), (64, 128), (128, 128)]  # (in, out) channels
    conv = sum(3 * 3 * cin * cout for cin, cout in convs)  # 864+9216+18432+36864+73728+147456
    assert conv == 286_560
    bn = sum(4 * cout for _, cout in convs)  # gamma, beta, moving mean, moving var: 4 * 448 = 1,792
    dense = (128 + 1) * 10  # after global average pooling: 128 inputs
    s = summary("vgg_bn", classes=10)
    assert s.total_params == conv + bn + dense == 289_642
    assert s.non_trainable_params == 2 * 448 == 896  # the moving mean and variance
    assert s.trainable_params == 288_746
    # Keras 3 (torch backend) gives 289,642 / 288,746 / 896 for the same layers (checked once by hand).
    assert torch_count(cnnlab.build_model("vgg_bn", classes=10)) == s.total_params


def test_resnet_small_totals_by_hand():
    """presets/resnet_small.yaml at 64x64x3, 10 classes: a stem and three residual blocks."""
    stem = 3 * 3 * 3 * 32 + 4 * 32                                          # 864 + 128 = 992
    block1 = 2 * (3 * 3 * 32 * 32 + 4 * 32)                                 # identity shortcut: 18,688
    block2 = (3 * 3 * 32 * 64 + 4 * 64) + (3 * 3 * 64 * 64 + 4 * 64) + (32 * 64 + 4 * 64)  # 1x1 projection: 58,112
    block3 = (3 * 3 * 64 * 128 + 4 * 128) + (3 * 3 * 128 * 128 + 4 * 128) + (64 * 128 + 4 * 128)  # 230,912
    dense = (128 + 1) * 10                                                  # 1,290
    assert (stem, block1, block2, block3, dense) == (992, 18_688, 58_112, 230_912, 1_290)
    s = summary("resnet_small", classes=10)
    assert s.total_params == stem + block1 + block2 + block3 + dense == 309_994
    bn_channels = 32 + 2 * 32 + 3 * 64 + 3 * 128  # 672 channels behind a BatchNormalization
    assert s.non_trainable_params == 2 * bn_channels == 1_344
    assert s.trainable_params == 308_650
    # Keras 3 (torch backend) builds the same network with 309,994 / 308,650 / 1,344 parameters
    # (checked once by hand with keras.Sequential / the functional API; Keras is not a test dependency).
    assert torch_count(cnnlab.build_model("resnet_small", classes=10)) == s.total_params


@pytest.mark.parametrize(
    "layer, input, params, trainable",
    [
        ({"Conv2D": {"filters": 16, "kernel_size": 3}}, (32, 32, 3), (3 * 3 * 3 + 1) * 16, None),
        ({"Conv2D": {"filters": 16, "kernel_size": [3, 5]}}, (32, 32, 8), (3 * 5 * 8 + 1) * 16, None),
        ({"Conv2D": {"filters": 16, "kernel_size": 3, "use_bias": False}}, (32, 32, 8), 3 * 3 * 8 * 16, None),
        ({"DepthwiseConv2D": {"kernel_size": 3}}, (32, 32, 8), (3 * 3 + 1) * 8, None),
        ({"DepthwiseConv2D": {"kernel_size": 3, "depth_multiplier": 2}}, (32, 32, 8), (3 * 3 + 1) * 16, None),
        ({"SeparableConv2D": {"filters": 16, "kernel_size": 3}}, (32, 32, 8), 3 * 3 * 8 + (8 + 1) * 16, None),
        ({"BatchNormalization": {}}, (32, 32, 24), 4 * 24, 2 * 24),
        ({"MaxPooling2D": {}}, (32, 32, 8), 0, None),
        ({"AveragePooling2D": {"pool_size": 3}}, (32, 32, 8), 0, None),
        ({"GlobalAveragePooling2D": {}}, (32, 32, 8), 0, None),
        ({"GlobalMaxPooling2D": {}}, (32, 32, 8), 0, None),
        ({"Dropout": {"rate": 0.5}}, (32, 32, 8), 0, None),
        ({"SpatialDropout2D": {"rate": 0.2}}, (32, 32, 8), 0, None),
        ({"ZeroPadding2D": {"padding": 2}}, (32, 32, 8), 0, None),
        ({"Activation": {"activation": "gelu"}}, (32, 32, 8), 0, None),
    ],
)
def test_each_layer_type_counts_like_keras(layer, input, params, trainable):
    model_spec = spec([layer, "Flatten", {"Dense": {"units": 2}}], input)
    s = summary(model_spec)
    row = s.layers[0]
    assert row.params == params
    assert row.trainable == (params if trainable is None else trainable)
    assert row.non_trainable == params - row.trainable
    # The summary agrees with the tensors the torch module really holds.
    assert torch_count(cnnlab.build_model(model_spec)) == s.total_params


def test_dense_and_batchnorm_after_dense():
    s = summary(spec(["Flatten", {"Dense": {"units": 64}}, {"BatchNormalization": {}},
                      {"Dense": {"units": 5, "use_bias": False}}], (4, 4, 2)))
    r = s.layers
    assert (r[1].params, r[1].formula) == ((32 + 1) * 64, "(32+1)*64 = 2,112")
    assert (r[2].params, r[2].trainable, r[2].non_trainable) == (256, 128, 128)
    assert r[3].params == 64 * 5
    assert s.non_trainable_params == 128


def test_residual_block_identity_and_projection():
    model_spec = spec([
        {"Conv2D": {"filters": 16, "kernel_size": 3, "padding": "same"}},
        {"ResidualBlock": {"filters": 16}},               # identity shortcut
        {"ResidualBlock": {"filters": 32, "strides": 2}},  # 1x1 projection + BN
        "GlobalAveragePooling2D", {"Dense": {"units": 3}},
    ])
    s = summary(model_spec)
    ident, proj = s.layers[1], s.layers[2]
    # conv 3x3 (no bias) + BN, twice
    assert ident.params == 2 * (3 * 3 * 16 * 16 + 4 * 16)
    assert ident.non_trainable == 2 * 2 * 16
    assert ident.output_shape == (32, 32, 16)
    assert proj.params == (3 * 3 * 16 * 32 + 4 * 32) + (3 * 3 * 32 * 32 + 4 * 32) + (16 * 32 + 4 * 32)
    assert proj.output_shape == (16, 16, 32)
    assert [c.name for c in proj.children][-2:] == ["residual_block_1/shortcut", "residual_block_1/shortcut_bn"]
    assert torch_count(cnnlab.build_model(model_spec)) == s.total_params


@pytest.mark.parametrize("preset", ["seed", "tinyvgg", "vgg_bn", "resnet_small", "airbench", "airbench_medium",
                                    "airbench_small"])
def test_presets_summary_equals_torch_and_forward_shapes(preset):
    model = cnnlab.build_model(preset, classes=4).eval()
    s = summary(model)
    assert torch_count(model) == s.total_params
    assert s.layers[-1].output_shape == (4,)
    h, w, c = model.input_shape
    feats = model.features(torch.zeros(2, c, h, w))
    assert len(feats) == len(s.layers)  # one output per summary row
    for row, (name, out) in zip(s.layers, feats.items(), strict=True):
        keras = tuple(out.shape[1:]) if out.dim() == 2 else (out.shape[2], out.shape[3], out.shape[1])
        assert row.name == name and keras == row.output_shape


# -- shapes: valid/same, strides, non-square inputs ------------------------------------------

@pytest.mark.parametrize(
    "layer, expected",
    [
        # valid: floor((n - k) / s) + 1 ; same: ceil(n / s)
        ({"Conv2D": {"filters": 4, "kernel_size": 3, "strides": 2}}, ((37 - 3) // 2 + 1, (23 - 3) // 2 + 1, 4)),
        ({"Conv2D": {"filters": 4, "kernel_size": 3, "strides": 2, "padding": "same"}}, (19, 12, 4)),
        ({"Conv2D": {"filters": 4, "kernel_size": [5, 3], "strides": [3, 1], "padding": "same"}}, (13, 23, 4)),
        ({"Conv2D": {"filters": 4, "kernel_size": [5, 3], "strides": [3, 1]}}, ((37 - 5) // 3 + 1, 21, 4)),
        ({"Conv2D": {"filters": 4, "kernel_size": 3, "dilation_rate": 2}}, (37 - 4, 23 - 4, 4)),
        ({"MaxPooling2D": {"pool_size": 2}}, (18, 11, 1)),
        ({"MaxPooling2D": {"pool_size": 2, "padding": "same"}}, (19, 12, 1)),
        ({"MaxPooling2D": {"pool_size": 3, "strides": 2}}, (18, 11, 1)),
        ({"AveragePooling2D": {"pool_size": 3, "strides": 2, "padding": "same"}}, (19, 12, 1)),
        ({"SeparableConv2D": {"filters": 6, "kernel_size": 3, "strides": 2, "padding": "same"}}, (19, 12, 6)),
        ({"ZeroPadding2D": {"padding": [1, 2]}}, (39, 27, 1)),
    ],
)
def test_output_shapes_non_square(layer, expected):
    s = spec([layer, "Flatten", {"Dense": {"units": 2}}], (37, 23, 1))
    assert summary(s).layers[0].output_shape == expected
    model = cnnlab.build_model(s).eval()
    out = model.features(torch.randn(1, 1, 37, 23))[model.traced[0].name]
    assert (out.shape[2], out.shape[3], out.shape[1]) == expected


def test_same_padding_with_stride_pads_bottom_right_like_tensorflow():
    # 6x6 input, k=3, s=2, same -> output 3x3, total padding 1: all of it at the bottom/right.
    model = cnnlab.build_model(spec([{"Conv2D": {"filters": 1, "kernel_size": 3, "strides": 2,
                                                 "padding": "same", "use_bias": False}},
                                     "Flatten", {"Dense": {"units": 2}}], (6, 6, 1)))
    conv = model.layers["conv2d"].conv
    x = torch.randn(1, 1, 6, 6)
    expected = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (0, 1, 0, 1)), conv.weight, stride=2)
    assert torch.allclose(model.layers["conv2d"](x), expected)


def test_average_pool_same_ignores_padding_like_tensorflow():
    model = cnnlab.build_model(spec([{"AveragePooling2D": {"pool_size": 2, "padding": "same"}},
                                     "Flatten", {"Dense": {"units": 2}}], (3, 3, 1)))
    x = torch.arange(9.0).view(1, 1, 3, 3)
    out = model.layers["average_pooling2d"](x)
    # windows: [0,1,3,4] [2,5] [6,7] [8] -> means of the real pixels only
    assert out.flatten().tolist() == [2.0, 3.5, 6.5, 8.0]


def test_receptive_field_grows_as_expected():
    s = summary("tinyvgg")
    # 3 -> 5 -> pool(2,2): 6 -> +2*2: 10 -> 14 -> pool: 16
    assert [r.receptive_field for r in s.layers[:6]] == [3, 5, 6, 10, 14, 16]


def test_macs_of_a_conv_and_a_dense():
    s = summary("seed")
    assert s.layers[0].macs == 62 * 62 * 32 * 3 * 3 * 3
    assert s.layers[3].macs == 30752 * 128


def test_batchnorm_uses_keras_momentum_and_epsilon():
    model = cnnlab.build_model(spec([{"Conv2D": {"filters": 2, "kernel_size": 1}},
                                     {"BatchNormalization": {"momentum": 0.9, "epsilon": 0.01}},
                                     "Flatten", {"Dense": {"units": 2}}], (4, 4, 3)))
    bn = model.layers["batch_normalization"]
    assert isinstance(bn, torch.nn.BatchNorm2d)
    assert bn.momentum == pytest.approx(0.1) and bn.eps == pytest.approx(0.01)


def test_units_classes_and_final_softmax_kept_aside():
    model = cnnlab.build_model("seed", classes=3)
    assert model.num_outputs == 3 and model.output_activation == "softmax"
    x = torch.randn(2, 3, 64, 64)
    logits = model.eval()(x)
    assert torch.allclose(model.predict_proba(x), torch.softmax(logits, 1))
    assert summary("seed", classes=3).total_params == 3_938_570 - 1290 + 129 * 3


def test_python_layer_objects_check_their_arguments():
    from cnnlab.model.layers import Conv2D

    assert Conv2D(32, 3).kernel_size == (3, 3)
    with pytest.raises(ValueError, match="kernel_size"):
        Conv2D(32, 0)
