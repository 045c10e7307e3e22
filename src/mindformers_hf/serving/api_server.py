"""The OpenAI-compatible HTTP server (FastAPI + uvicorn, the [serve] extra) over an `AsyncEngine`.

Routes: GET /health, GET /metrics, GET /v1/models, POST /v1/completions, POST /v1/chat/completions.
Streaming is Server-Sent Events in vLLM's format: (chat) a role chunk per choice, text deltas, one chunk
with each choice's finish_reason, a usage chunk with `choices: []` when stream_options.include_usage, then
`data: [DONE]`. Errors are OpenAI-shaped ({"error": {"message", "type", "param", "code"}}).
"""
import asyncio
import hmac
import json
import time
import uuid

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse

from ..utils import logger
from .async_engine import QueueFull
from .protocol import APIError, bad, chat_prompt, completion_prompts, sampling_params

MAX_BODY_BYTES = 4 << 20


def build_app(async_engine, served_model_name, api_key=None, max_body_bytes=MAX_BODY_BYTES):
    engine = async_engine.engine
    tokenizer = engine.tokenizer
    app = FastAPI(title="mindformers-hf serve")
    created = int(time.time())

    @app.exception_handler(APIError)
    async def _api_error(request, error):
        return JSONResponse(error.body(), status_code=error.status, headers=error.headers)

    @app.exception_handler(Exception)
    async def _internal_error(request, error):
        logger.error("%s %s failed: %s: %s", request.method, request.url.path, type(error).__name__, error)
        return JSONResponse(APIError(500, f"{type(error).__name__}: {error}", "internal_error").body(),
                            status_code=500)

    @app.middleware("http")
    async def _guard(request, call_next):
        if api_key is not None and request.url.path.startswith("/v1"):
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
                error = APIError(401, "invalid or missing API key (Authorization: Bearer KEY)", "authentication_error")
                return JSONResponse(error.body(), status_code=401)
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > max_body_bytes:
            error = APIError(413, f"the request body exceeds {max_body_bytes} bytes", param=None)
            return JSONResponse(error.body(), status_code=413)
        return await call_next(request)

    @app.get("/health")
    async def health():
        return PlainTextResponse("")

    @app.get("/metrics")
    async def metrics():
        return PlainTextResponse(async_engine.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": served_model_name, "object": "model", "created": created,
                                            "owned_by": "mindformers_hf", "max_model_len": engine.max_model_len}]}

    async def read_body(request):
        raw = await request.body()
        if len(raw) > max_body_bytes:
            raise APIError(413, f"the request body exceeds {max_body_bytes} bytes")
        try:
            body = json.loads(raw)
        except ValueError as error:
            raise bad(f"the request body is not valid JSON: {error}") from None
        if not isinstance(body, dict):
            raise bad("the request body must be a JSON object")
        model = body.get("model")
        if model is not None and model != served_model_name:
            raise APIError(404, f"the model {model!r} does not exist (this server serves {served_model_name!r})",
                           "NotFoundError", "model")
        return body

    def prepare(body, prompts, params):
        """Check every prompt and the queue before anything is queued: a bad request disturbs nobody."""
        try:
            prompts = [engine.check_request(ids, params)[0] for ids in prompts]
        except ValueError as error:
            raise bad(str(error)) from None
        stream_options = body.get("stream_options") or {}
        if not isinstance(stream_options, dict):
            raise bad("'stream_options' must be an object", "stream_options")
        stream = body.get("stream", False)
        if not isinstance(stream, bool):
            raise bad("'stream' must be a boolean", "stream")
        try:
            async_engine.check_capacity(len(prompts))
        except QueueFull as error:
            raise APIError(503, str(error), "service_unavailable", headers={"Retry-After": "1"}) from None
        return prompts, stream, bool(stream_options.get("include_usage"))

    async def results(request_id, prompts, params):
        """(prompt index, RequestOutput) from all of the prompts' engine requests, as they come."""
        merged = asyncio.Queue()

        async def pump(i, ids):
            try:
                async for out in async_engine.generate(f"{request_id}-{i}", ids, params):
                    await merged.put((i, out))
            except Exception as error:  # noqa: BLE001 -- handed to the consumer
                await merged.put((i, error))
            await merged.put((i, None))

        tasks = [asyncio.ensure_future(pump(i, ids)) for i, ids in enumerate(prompts)]
        try:
            remaining = len(tasks)
            while remaining:
                i, item = await merged.get()
                if item is None:
                    remaining -= 1
                elif isinstance(item, Exception):
                    raise item
                else:
                    yield i, item
        finally:
            for task in tasks:
                task.cancel()

    async def collect(request, request_id, prompts, params):
        """Final RequestOutput per prompt; the requests are aborted when the client disconnects first."""
        final = {}

        async def drain():
            async for i, out in results(request_id, prompts, params):
                if out.finished:
                    final[i] = out

        async def hang_up():
            # after the body, the only message a request can receive is http.disconnect. Waiting for it (rather
            # than polling request.is_disconnected(), which behind Starlette's BaseHTTPMiddleware -- our _guard
            # -- never saw the disconnect: requests ran to max_tokens) ends as soon as the client goes.
            while (await request.receive())["type"] != "http.disconnect":
                pass

        task, watcher = asyncio.ensure_future(drain()), asyncio.ensure_future(hang_up())
        try:
            await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watcher.cancel()
        if not task.done():
            task.cancel()
            raise asyncio.CancelledError("client disconnected")
        try:
            task.result()
        except QueueFull as error:   # the queue filled up between the handler's check and this request's turn
            raise APIError(503, str(error), "service_unavailable", headers={"Retry-After": "1"}) from None
        return [final[i] for i in range(len(prompts))]

    def usage(prompts, outs):
        prompt_tokens = sum(len(ids) for ids in prompts)
        completion = sum(len(o.token_ids) for out in outs for o in out.outputs)
        return {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
                "total_tokens": prompt_tokens + completion}

    def log(kind, request_id, started, use, status=200):
        logger.info("%s %s %d prompt_tokens=%d completion_tokens=%d %.3fs", kind, request_id, status,
                    use["prompt_tokens"], use["completion_tokens"], time.monotonic() - started)

    async def sse(request_id, prompts, params, chunk, choice, role, include_usage, started):
        """The event stream: `chunk(choices)` builds an event, `choice(index, delta text, finish_reason,
        role=)` one choice of it."""
        sent, done, tokens = {}, set(), {}
        n = params.n
        try:
            if role:
                for i in range(len(prompts) * n):
                    yield _event(chunk([choice(i, "", None, role=True)]))
            async for p, out in results(request_id, prompts, params):
                for o in out.outputs:
                    index = p * n + o.index
                    if index in done:
                        continue
                    tokens[index] = len(o.token_ids)
                    delta = o.text[sent.get(index, 0):]
                    if delta or o.finish_reason:
                        sent[index] = len(o.text)
                        yield _event(chunk([choice(index, delta, o.finish_reason)]))
                    if o.finish_reason:
                        done.add(index)
            prompt_tokens = sum(len(ids) for ids in prompts)
            use = {"prompt_tokens": prompt_tokens, "completion_tokens": sum(tokens.values()),
                   "total_tokens": prompt_tokens + sum(tokens.values())}
            if include_usage:
                yield _event({**chunk([]), "usage": use})
            log("stream", request_id, started, use)
        except Exception as error:  # noqa: BLE001 -- the status is sent already: report in the stream
            logger.error("stream %s failed: %s", request_id, error)
            yield _event(APIError(500, str(error), "internal_error").body())
        yield "data: [DONE]\n\n"

    @app.post("/v1/completions")
    async def completions(request: Request):
        started = time.monotonic()
        body = await read_body(request)
        params = sampling_params(body, 16, chat=False)
        prompts, stream, include_usage = prepare(body, completion_prompts(body, tokenizer), params)
        echo = body.get("echo", False)
        if not isinstance(echo, bool):
            raise bad("'echo' must be a boolean", "echo")
        if params.logprobs is not None and stream:
            raise bad("logprobs with stream=true is not supported yet", "logprobs")
        if params.logprobs is not None and echo:
            params.prompt_logprobs = params.logprobs
        request_id = f"cmpl-{uuid.uuid4().hex}"
        head = {"id": request_id, "object": "text_completion", "created": int(time.time()), "model": served_model_name}
        prefix = [tokenizer.decode(ids) if echo else "" for ids in prompts]
        if stream:
            echoed = set()

            def choice(index, text, finish, role=False):
                if index not in echoed:  # the echoed prompt goes with the choice's first delta
                    echoed.add(index)
                    text = prefix[index // params.n] + text
                return {"index": index, "text": text, "logprobs": None, "finish_reason": finish}
            return StreamingResponse(
                sse(request_id, prompts, params, lambda choices: {**head, "choices": choices}, choice, False,
                    include_usage, started), media_type="text/event-stream")
        outs = await collect(request, request_id, prompts, params)
        choices = [{"index": p * params.n + o.index, "text": prefix[p] + o.text,
                    "logprobs": _completion_logprobs(tokenizer, o, out.prompt_token_ids if echo else None)
                    if params.logprobs is not None else None,
                    "finish_reason": o.finish_reason} for p, out in enumerate(outs) for o in out.outputs]
        use = usage(prompts, outs)
        log("completion", request_id, started, use)
        return {**head, "choices": choices, "usage": use}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        started = time.monotonic()
        body = await read_body(request)
        params = sampling_params(body, None, chat=True)
        if params.logprobs is not None:
            raise bad("logprobs in chat completions are not supported yet", "logprobs")
        prompts, stream, include_usage = prepare(body, [chat_prompt(body, tokenizer)], params)
        request_id = f"chatcmpl-{uuid.uuid4().hex}"
        head = {"id": request_id, "object": "chat.completion", "created": int(time.time()), "model": served_model_name}
        if stream:
            def choice(index, text, finish, role=False):
                delta = {"role": "assistant", "content": ""} if role else {"content": text}
                return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
            chunk_head = {**head, "object": "chat.completion.chunk"}
            return StreamingResponse(
                sse(request_id, prompts, params, lambda choices: {**chunk_head, "choices": choices}, choice, True,
                    include_usage, started), media_type="text/event-stream")
        outs = await collect(request, request_id, prompts, params)
        choices = [{"index": o.index, "message": {"role": "assistant", "content": o.text}, "logprobs": None,
                    "finish_reason": o.finish_reason} for o in outs[0].outputs]
        use = usage(prompts, outs)
        log("chat", request_id, started, use)
        return {**head, "choices": choices, "usage": use}

    return app


def _event(payload):
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


def _completion_logprobs(tokenizer, output, echoed_prompt=None):
    """OpenAI's legacy completions logprobs: tokens, token_logprobs, top_logprobs, text_offset (the echoed
    prompt's tokens first, the very first of them without a logprob)."""
    ids, scored = list(output.token_ids), list(output.logprobs)
    if echoed_prompt is not None:
        ids, scored = list(echoed_prompt) + ids, list(output.prompt_logprobs) + scored
    tokens = [tokenizer.decode([t]) for t in ids]
    offsets, at = [], 0
    for token in tokens:
        offsets.append(at)
        at += len(token)
    return {"tokens": tokens,
            "token_logprobs": [None if lp is None else lp[t] for t, lp in zip(ids, scored)],
            "top_logprobs": [None if lp is None else {tokenizer.decode([k]): v for k, v in lp.items()}
                             for lp in scored],
            "text_offset": offsets}


class ServerThread:
    """uvicorn serving `app` from a background thread (tests, benchmarks); `port=0` picks a free port."""

    def __init__(self, app, host="127.0.0.1", port=0):
        import threading

        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                                    timeout_graceful_shutdown=1))
        self.thread = threading.Thread(target=self.server.run, name="mindformers_hf-http", daemon=True)
        self.host = host

    def start(self, timeout=60):
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the HTTP server did not start")
            time.sleep(0.02)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    @property
    def url(self):
        return f"http://{self.host}:{self.port}"

    def stop(self):
        self.server.should_exit = True
        self.thread.join(timeout=10)
