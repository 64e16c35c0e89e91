"""`cnnlab doctor`: what this machine offers (versions, threads, GPUs) and the auto device."""

from cnnlab.cli._common import add_subcommand, print_json


def register(sub) -> None:
    p = add_subcommand(sub, "doctor", "show versions, CPU threads, GPUs and the device auto picks",
                       "Print Python and torch versions, CPU threads, the CUDA and MPS devices "
                       "torch sees, and which device `--device auto` would use; without a GPU, what to do "
                       "(on Colab: Runtime > Change runtime type). In Python: cnnlab.doctor().")
    p.add_argument("--format", choices=["table", "json"], default="table", help="output format")
    p.set_defaults(func=run)


def run(args) -> int:
    # imported when the command runs: `cnnlab --help` stays free of torch
    from cnnlab.diagnostics import doctor, doctor_advice

    info = doctor()
    if args.format == "json":
        print_json({**info, "advice": doctor_advice(info)})
        return 0
    print(info)
    return 0
