"""`mindformers-hf serve MODEL`: the OpenAI-compatible server (serving/api_server.py) on one model."""
import argparse
import os
import sys

API_KEY_ENV = "MINDFORMERS_HF_API_KEY"


def add_serve_parser(sub):
    parser = sub.add_parser("serve", help="OpenAI-compatible HTTP server (continuous batching, paged KV cache)",
                            formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("model", nargs="?", default=None,
                        help="checkpoint folder or hub repo id (default: the embedded SmolLM2 model)")
    parser.add_argument("--gguf-file", default=None, help="GGUF file name inside MODEL")
    parser.add_argument("--dtype", default="auto", help="auto, float32, float16 or bfloat16")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 exposes the server)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--served-model-name", default=None, help="the model name clients send (default: MODEL)")
    parser.add_argument("--api-key", default=None,
                        help=f"require 'Authorization: Bearer KEY' on /v1/* (or set {API_KEY_ENV})")
    parser.add_argument("--max-num-seqs", type=int, default=32, help="sequences decoded together per step")
    parser.add_argument("--max-num-batched-tokens", type=int, default=2048, help="tokens processed per step")
    parser.add_argument("--block-size", type=int, default=16, help="tokens per KV cache block")
    parser.add_argument("--num-blocks", type=int, default=None, help="KV cache blocks (default: 8192 tokens' worth, or --max-model-len's)")
    parser.add_argument("--max-model-len", type=int, default=None,
                        help="longest prompt + output (default: the config's max_position_embeddings)")
    parser.add_argument("--max-waiting-requests", type=int, default=256, help="beyond this, requests get 503")
    parser.add_argument("--enable-prefix-caching", action=argparse.BooleanOptionalAction, default=True,
                        help="reuse the KV blocks of prompt prefixes computed before (vLLM's automatic prefix caching)")
    parser.add_argument("--no-compile", action="store_true", help="run the decode step op by op")
    parser.set_defaults(func=cmd_serve)
    return parser


def build_server(args):
    """(AsyncEngine, FastAPI app) from the parsed flags; loads the model."""
    from ..serving import LLMEngine
    from ..serving.api_server import build_app
    from ..serving.async_engine import AsyncEngine
    from .model_path import resolve_model

    args.gguf_file = getattr(args, "gguf_file", None)
    path, gguf_file = resolve_model(args)
    print(f"Loading {os.path.join(path, gguf_file) if gguf_file else path} ...", file=sys.stderr)
    engine = LLMEngine.from_pretrained(path, gguf_file=gguf_file, dtype=args.dtype, max_num_seqs=args.max_num_seqs,
                                       max_num_batched_tokens=args.max_num_batched_tokens, block_size=args.block_size,
                                       num_blocks=args.num_blocks, max_model_len=args.max_model_len,
                                       compile_decode=not args.no_compile,
                                       enable_prefix_caching=args.enable_prefix_caching)
    async_engine = AsyncEngine(engine, max_waiting=args.max_waiting_requests)
    name = args.served_model_name or args.model or (gguf_file or path)
    api_key = args.api_key if args.api_key is not None else os.environ.get(API_KEY_ENV) or None
    return async_engine, build_app(async_engine, name, api_key=api_key)


def cmd_serve(args):
    try:
        import uvicorn
    except ImportError:
        raise SystemExit('error: serving needs FastAPI and uvicorn: pip install "mindformers_hf[serve]"') from None
    if not os.environ.get("TRANSFORMERS_VERBOSITY"):
        # a server logs each request, as vLLM's and uvicorn's do (our lines follow transformers' verbosity,
        # whose library default, WARNING, would hide them)
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_info()
    async_engine, app = build_server(args)
    async_engine.start()
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="info", timeout_graceful_shutdown=5)
    finally:
        async_engine.shutdown()
    return 0
