"""`cnnlab doctor`: what this machine offers (versions, threads, GPUs) and the auto device."""

from cnnlab.cli._common import add_subcommand, print_json


def register(sub) -> None:
    p = add_subcommand(sub, "doctor", "show versions, CPU threads, GPUs and the device auto picks",
                       "Print Python and torch versions, CPU threads, the CUDA and MPS devices "
                       "torch sees, and which device `--device auto` would use.")
    p.add_argument("--format", choices=["table", "json"], default="table", help="output format")
    p.set_defaults(func=run)


def run(args) -> int:
    from cnnlab.device import doctor

    info = doctor()
    if args.format == "json":
        print_json(info)
        return 0
    for key, value in info.items():
        if key == "cuda_devices":
            for d in value:
                print(f"{'cuda:' + str(d['index']):>16}  {d['name']} ({d['memory_gb']} GB)")
            continue
        print(f"{key:>16}  {value}")
    return 0
