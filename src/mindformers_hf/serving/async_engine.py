"""`AsyncEngine`: one thread drives the `LLMEngine` (every model call happens there: MindSpore is not
thread-safe); asyncio handlers talk to it through a command queue and get per-request asyncio queues back.

A request whose consumer goes away (client disconnect, cancelled task) is aborted on the engine thread at
its next step boundary, which frees its KV blocks.
"""
import asyncio
import queue
import threading
import time

from ..utils import logger
from .metrics import Metrics


class QueueFull(RuntimeError):
    pass


class AsyncEngine:
    def __init__(self, engine, max_waiting=256):
        self.engine = engine
        self.max_waiting = max_waiting
        self.metrics = Metrics(engine)
        self._commands = queue.SimpleQueue()
        self._wake = threading.Event()
        self._streams = {}                  # request id -> (event loop, asyncio.Queue)
        self._pending = 0                   # adds not yet taken by the engine thread
        self._lock = threading.Lock()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="mindformers_hf-engine", daemon=True)

    def start(self):
        self._thread.start()
        return self

    def shutdown(self):
        self._stopped = True
        self._wake.set()
        self._thread.join(timeout=30)

    # ------------------------------------------------------------------ asyncio side
    def check_capacity(self, count=1):
        """QueueFull when `count` more requests would overflow the waiting queue (the server answers 503)."""
        if self.engine.num_waiting + self._pending + count > self.max_waiting:
            raise QueueFull(f"the waiting queue is full ({self.max_waiting} requests); retry later")

    async def generate(self, request_id, prompt_ids, params):
        """Yield the request's RequestOutputs (cumulative) until it finishes; abort it if the consumer stops."""
        self.check_capacity()
        loop, outputs = asyncio.get_running_loop(), asyncio.Queue()
        self._streams[request_id] = (loop, outputs)
        with self._lock:
            self._pending += 1
        self._commands.put(("add", request_id, prompt_ids, params))
        self._wake.set()
        finished = False
        try:
            while True:
                item = await outputs.get()
                if isinstance(item, BaseException):
                    raise item
                finished = item.finished
                yield item
                if finished:
                    return
        finally:
            self._streams.pop(request_id, None)
            if not finished:
                self._commands.put(("abort", request_id))
                self._wake.set()

    # ------------------------------------------------------------------ engine thread
    def _push(self, request_id, item):
        stream = self._streams.get(request_id)
        if stream is not None:
            loop, outputs = stream
            try:
                loop.call_soon_threadsafe(outputs.put_nowait, item)
            except RuntimeError:  # the loop is closed: nobody listens any more
                self._commands.put(("abort", request_id))

    def _drain_commands(self):
        while True:
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return
            if command[0] == "add":
                _, request_id, prompt_ids, params = command
                with self._lock:
                    self._pending -= 1
                if request_id not in self._streams:  # the client left before the engine saw the request
                    continue
                try:
                    self.engine.add_request(request_id, prompt_ids, params)
                    self.metrics.arrived(request_id)
                except ValueError as error:
                    self._push(request_id, error)
            else:
                self.engine.abort_request(command[1])
                self.metrics.done(command[1])

    def _run(self):
        while not self._stopped:
            self._drain_commands()
            if not self.engine.has_unfinished_requests():
                self._wake.wait(0.5)
                self._wake.clear()
                continue
            try:
                outputs = self.engine.step()
            except Exception as error:  # noqa: BLE001 -- fail the running requests, keep serving
                logger.exception("serving: engine step failed")
                for request_id in list(self.engine.requests):
                    self.engine.abort_request(request_id)
                    self._push(request_id, RuntimeError(f"engine step failed: {type(error).__name__}: {error}"))
                continue
            now = time.monotonic()
            for out in outputs:
                self.metrics.tokens(out, now)
                self._push(out.request_id, out)
