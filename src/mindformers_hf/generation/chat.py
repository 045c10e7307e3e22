"""What the remote-code families' `chat()` / `stream_chat()` share, on our `generate`: the new token ids of one
prompt, all at once or after every step, and a safe reading of ChatGLM3's tool-call text."""
import ast
import queue
import threading

import numpy as np

from .stopping_criteria import StoppingCriteria, StoppingCriteriaList


def new_tokens(model, input_ids, attention_mask=None, **generate_kwargs):
    """The ids `generate` adds after a one-row prompt (numpy in, list of ints out)."""
    ids = np.asarray(input_ids).reshape(1, -1)
    mask = np.ones_like(ids) if attention_mask is None else np.asarray(attention_mask).reshape(1, -1)
    out = model.generate(input_ids=ids, attention_mask=mask, **generate_kwargs)
    return [int(t) for t in np.asarray(out)[0, ids.shape[1]:]]


class _QueueStreamer:
    """generate's streamer protocol, forwarding each step's token to a queue (the prompt is skipped). In lockstep,
    generate waits after each token until the reader asks for the next one."""

    def __init__(self, lockstep=False):
        self.queue, self._prompt_seen = queue.Queue(), False
        self.resume = threading.Semaphore(0) if lockstep else None

    def put(self, value):
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        self.queue.put(int(np.asarray(value).reshape(-1)[0]))
        if self.resume is not None:
            self.resume.acquire()

    def end(self):
        self.queue.put(None)


class _Cancelled(StoppingCriteria):
    def __init__(self):
        self.event = threading.Event()

    def __call__(self, input_ids, scores, **kwargs):
        return np.full(input_ids.shape[0], self.event.is_set())


def stream_new_tokens(model, input_ids, attention_mask=None, lockstep=False, **generate_kwargs):
    """Yields the list of ids generated so far after every step; generate runs in a thread (as with
    transformers' TextIteratorStreamer) and stops at the next step when the caller stops iterating.
    `lockstep=True`: generate waits while the caller holds a yield, so a cache passed as `past_key_values` then
    holds exactly the prompt and the ids yielded but the last (transformers' prompt + generated - 1), also after
    the caller stops iterating -- the thread does not run ahead."""
    ids = np.asarray(input_ids).reshape(1, -1)
    mask = np.ones_like(ids) if attention_mask is None else np.asarray(attention_mask).reshape(1, -1)
    streamer, cancel = _QueueStreamer(lockstep), _Cancelled()
    criteria = StoppingCriteriaList(list(generate_kwargs.pop("stopping_criteria", None) or []) + [cancel])
    failure = []

    def run():
        try:
            model.generate(input_ids=ids, attention_mask=mask, streamer=streamer, stopping_criteria=criteria,
                           **generate_kwargs)
        except BaseException as error:  # re-raised in the caller's thread
            failure.append(error)
            streamer.end()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    tokens = []
    try:
        while True:
            token = streamer.queue.get()
            if token is None:
                break
            tokens.append(token)
            yield list(tokens)
            if streamer.resume is not None:
                streamer.resume.release()
    finally:
        cancel.event.set()  # before the release: the released step sees it and stops without another forward
        if streamer.resume is not None:
            streamer.resume.release()
        thread.join()
    if failure:
        raise failure[0]


def parse_tool_call(text):
    """ChatGLM3 writes a tool call as `tool_call(name=value, ...)`; the repo eval()s it. We read only literal
    keyword arguments (ast.literal_eval) and never run the text."""
    try:
        call = ast.parse(text.strip(), mode="eval").body
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "tool_call"
                and not call.args):
            raise ValueError("not a tool_call(...) with keyword arguments")
        return {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords if kw.arg is not None}
    except (SyntaxError, ValueError) as error:
        raise ValueError(f"the model's tool call is not tool_call(<name>=<literal>, ...): {text!r} ({error})") \
            from None
