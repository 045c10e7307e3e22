"""The `mindformers-hf` command: `chat` and `generate` on the embedded default model or any --model folder;
`launch`, `config` and `env` as accelerate's (commands/launch.py); `eval` as lm_eval's (commands/eval.py)."""
import argparse
import os
import sys

from .model_path import DEFAULT_MODEL_NOTE, resolve_model as _resolve_model


def _add_model_args(parser):
    parser.add_argument("--model", default=None,
                        help=f"checkpoint folder or hub repo id (default: {DEFAULT_MODEL_NOTE})")
    parser.add_argument("--gguf-file", default=None, help="GGUF file name inside --model")
    parser.add_argument("--dtype", default="auto", help="auto, float32, float16 or bfloat16")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--do-sample", action="store_true", help="sample instead of greedy decoding")
    parser.add_argument("--temperature", type=float, default=None)
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--top-p", type=float, default=None)
    parser.add_argument("--repetition-penalty", type=float, default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--verbose", action="store_true",
                        help="show MindSpore's own log lines (warnings and up; by default only errors, or what "
                             "GLOG_v says when you set it)")


def _load(args):
    from .. import AutoModelForCausalLM, AutoTokenizer

    path, gguf_file = _resolve_model(args)
    extra = {"gguf_file": gguf_file} if gguf_file else {}
    print(f"Loading {os.path.join(path, gguf_file) if gguf_file else path} ...", file=sys.stderr)
    tokenizer = AutoTokenizer.from_pretrained(path, **extra)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=args.dtype, **extra)
    return model, tokenizer


def _generate_kwargs(args, tokenizer):
    kwargs = {"max_new_tokens": args.max_new_tokens, "do_sample": args.do_sample}
    for name in ("temperature", "top_k", "top_p", "repetition_penalty"):
        value = getattr(args, name)
        if value is not None:
            kwargs[name] = value
    if tokenizer.pad_token_id is None:
        kwargs["pad_token_id"] = tokenizer.eos_token_id
    if args.seed is not None:
        from .. import set_seed

        set_seed(args.seed)
    return kwargs


def cmd_generate(args):
    from transformers import TextStreamer

    model, tokenizer = _load(args)
    prompt = args.prompt
    if args.chat_template:
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)
        enc = tokenizer(text, return_tensors="np", add_special_tokens=False)
    else:
        enc = tokenizer(prompt, return_tensors="np")
        print(prompt, end="", flush=True)
    streamer = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    model.generate(**enc, streamer=streamer, **_generate_kwargs(args, tokenizer))
    return 0


def cmd_chat(args):
    from transformers import TextStreamer

    model, tokenizer = _load(args)
    kwargs = _generate_kwargs(args, tokenizer)
    system = [{"role": "system", "content": args.system}] if args.system else []
    messages = list(system)
    print("Chat with the model. /reset starts over, /exit quits.", file=sys.stderr)
    while True:
        try:
            user = input(">>> ")
        except (EOFError, KeyboardInterrupt):
            print(file=sys.stderr)
            return 0
        command = user.strip()
        if command in ("/exit", "/quit"):
            return 0
        if command == "/reset":
            messages = list(system)
            print("(conversation reset)", file=sys.stderr)
            continue
        if not command:
            continue
        messages.append({"role": "user", "content": user})
        enc = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True,
                                            return_tensors="np")
        streamer = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
        out = model.generate(**enc, streamer=streamer, **kwargs)
        reply_ids = list(out[0][enc["input_ids"].shape[1]:])
        reply = tokenizer.decode(reply_ids, skip_special_tokens=True)
        messages.append({"role": "assistant", "content": reply})


def build_parser():
    parser = argparse.ArgumentParser(prog="mindformers-hf", description="HF transformers' API on MindSpore")
    sub = parser.add_subparsers(dest="command", required=True)
    chat = sub.add_parser("chat", help="interactive streaming chat (/reset, /exit)")
    _add_model_args(chat)
    chat.add_argument("--system", default=None, help="system prompt")
    chat.set_defaults(func=cmd_chat)
    gen = sub.add_parser("generate", help="complete one prompt, streaming to stdout")
    _add_model_args(gen)
    gen.add_argument("prompt")
    gen.add_argument("--chat-template", action="store_true", help="wrap the prompt as one user chat turn")
    gen.set_defaults(func=cmd_generate)
    from .launch import add_config_parser, add_env_parser, add_launch_parser  # accelerate's commands, on msrun

    add_launch_parser(sub)
    add_config_parser(sub)
    add_env_parser(sub)
    from .serve import add_serve_parser

    add_serve_parser(sub)
    from .eval import add_eval_parser  # lm_eval's `run` flags, when lm_eval is installed

    add_eval_parser(sub)
    return parser


def quiet_mindspore(verbose):
    """chat / generate talk to a person: MindSpore's log lines (WARNINGs from graph compilation a user cannot act
    on) would land in the middle of a streamed reply. Both its C++ and its Python logging read GLOG_v when
    mindspore is first imported, so this runs before anything imports it; a GLOG_v the user set wins."""
    if not verbose:
        os.environ.setdefault("GLOG_v", "3")  # 3: errors only


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.command in ("chat", "generate"):
        quiet_mindspore(args.verbose)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
