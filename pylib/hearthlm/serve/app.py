"""The ASGI app: OpenAI's HTTP API over a Scheduler (Starlette; serve it with uvicorn).

    app = create_app(hearthlm.load(folder))            # or create_app(lambda: hearthlm.load(folder))
    uvicorn.run(app, host="127.0.0.1", port=8000)

Endpoints: POST /v1/chat/completions, /v1/completions (JSON, or server-sent events
ending in `data: [DONE]` with "stream": true), GET /v1/models, GET /health (503 until
the model is loaded), POST /tokenize, /detokenize, GET /metrics (Prometheus). Errors
are OpenAI's error objects. The forward passes run in the scheduler's thread; the
event loop only parses, renders templates in a worker thread and relays events.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hmac
import json
import os
import time
from typing import Callable, Optional

import anyio
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ..chat_template import ChatTemplate
from ..constraints import Constraint
from ..errors import ContextOverflowError, HearthlmError, InvalidInputError
from ..generation import PROMPT_CONTEXT, make_sampler
from . import protocol as P
from .metrics import CONTENT_TYPE, Metrics
from ..tool_calls import CallStream, ToolCalling
from .scheduler import Delta, Failed, Finished, Job, Overloaded, Scheduler, Unavailable, default_parallel

MAX_BODY_BYTES = 1 << 20
RETRY_AFTER = "1"          # seconds, on 429 / 503
OPEN_PATHS = ("/health",)  # answered without the API key (readiness probes)
ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/tokenize",
             "/detokenize", "/metrics")


class State:
    """What the app serves: set once the model is loaded."""

    def __init__(self, load: Callable, options: dict, on_load_error: Optional[Callable]):
        self.load, self.options, self.on_load_error = load, options, on_load_error
        self.model = self.scheduler = self.template = None
        self.name = options["model_name"]
        self.error: Optional[str] = None
        self.template_error: Optional[str] = None
        self.max_tokens = 0
        self.created = 0

    def start(self) -> None:
        """Load the model and start the scheduler (in a worker thread)."""
        o = self.options
        try:
            model = self.load()
            n_ctx = o["n_ctx"] or min(model.args.max_position_embeddings, 4096)
            speculation = o["speculation"]() if callable(o["speculation"]) else o["speculation"]
            parallel = o["parallel"] or default_parallel(model, n_ctx, o["kv_dtype"], speculation.get("draft_model"))
            scheduler = Scheduler(model, parallel, n_ctx, o["max_queue"], o["kv_dtype"], **speculation)
        except Exception as e:  # noqa: BLE001  reported by /health and on_load_error
            self.error = str(e) if isinstance(e, HearthlmError) else f"{type(e).__name__}: {e}"
            if self.on_load_error is not None:
                self.on_load_error(e)
            return
        try:
            self.template = ChatTemplate.for_model(model, o["template"]) if model.tokenizer else None
        except HearthlmError as e:  # completions still work; chat says why not
            self.template_error = str(e)
        self.max_tokens = min(o["max_tokens"] or scheduler.n_ctx, scheduler.n_ctx)
        self.name = self.name or os.path.basename(os.path.normpath(model.path))
        self.token_text = functools.lru_cache(maxsize=65536)(self._token_text)
        self.created = P.now()
        self.model, self.scheduler = model, scheduler

    def close(self) -> None:
        if self.scheduler is not None:
            self.scheduler.close()

    def ready(self) -> "State":
        if self.scheduler is None:
            if self.error:
                raise P.APIError(503, f"the model failed to load: {self.error}", code="model_load_failed")
            raise P.APIError(503, "the model is still loading", code="model_loading",
                             headers={"Retry-After": RETRY_AFTER})
        return self

    def _token_text(self, token: int) -> str:
        return self.model.tokenizer.decode([token], skip_special_tokens=False) if self.model.tokenizer else ""

    def prompt_ids(self, req: P.Request) -> tuple[list[int], list[int]]:
        """-> (prompt token ids, the ids the reply's detokenizer continues)."""
        model = self.model
        if req.kind == "chat":
            if self.template is None:
                raise P.APIError(400, self.template_error or "this model has no tokenizer, so it cannot chat",
                                 param="messages", code="chat_unsupported")
            ids = self.template.encode(model.tokenizer, req.messages, tools=req.tools)
            return model.check_ids(ids, "rendered chat").tolist(), []
        if isinstance(req.prompt, str):
            ids = model.require_tokenizer().encode(req.prompt)
        else:
            ids = req.prompt
        ids = model.check_ids(ids, "prompt").tolist()
        return ids, ids[-PROMPT_CONTEXT:]

    def prediction_ids(self, req: P.Request) -> list[int]:
        """The request's predicted output as token ids (none without one)."""
        if req.prediction is None:
            return []
        if self.model.tokenizer is None:
            raise P.invalid("prediction", "a predicted output needs a tokenizer, and this model has none")
        return self.model.tokenizer.encode(req.prediction)

    def reply_rules(self, req: P.Request) -> tuple[Optional[ToolCalling], object]:
        """-> (the request's tool calling or None, the constraint its reply is generated
        under or None)."""
        param = "tools" if req.tools is not None else "response_format"
        try:
            if req.tools is not None:
                calling = ToolCalling(self.model, self.template.source, req.tools, req.tool_choice)
                return (None if calling.choice == "none" else calling), calling.constraint()
            return None, Constraint.from_options(self.model, response_format=req.response_format)
        except InvalidInputError as e:
            message = str(e)
            raise P.APIError(400, message, param="tool_choice" if message.startswith("tool_choice") else param,
                             code="invalid_value") from None

    def reply_tokens(self, req: P.Request, n_prompt: int) -> int:
        """max_tokens for this request, within the limit and the context."""
        n_ctx = self.scheduler.n_ctx
        where = "messages" if req.kind == "chat" else "prompt"
        if req.max_tokens is not None and req.max_tokens > self.max_tokens:
            raise P.invalid("max_tokens", f"at most {self.max_tokens} on this server, got {req.max_tokens}")
        wanted = req.max_tokens if req.max_tokens is not None else min(self.max_tokens, n_ctx - n_prompt)
        if n_prompt + max(wanted, 1) > n_ctx:
            raise P.APIError(
                400, f"This model's maximum context length is {n_ctx} tokens. However, you requested "
                     f"{n_prompt + max(wanted, 1)} tokens ({n_prompt} in the {where}, {max(wanted, 1)} in the "
                     f"completion). Please reduce the length of the {where} or completion.",
                param=where, code="context_length_exceeded")
        return wanted


def create_app(model, *, model_name: Optional[str] = None, parallel: Optional[int] = None,
               n_ctx: Optional[int] = None, max_queue: Optional[int] = None, api_key: Optional[str] = None,
               max_body_bytes: int = MAX_BODY_BYTES, max_tokens: Optional[int] = None, kv_dtype: str = "f32",
               template: Optional[str] = None, speculation=None,
               on_load_error: Optional[Callable[[Exception], None]] = None) -> Starlette:
    """An ASGI app serving `model`: a hearthlm Model, or a function returning one
    (called in a thread at startup; /health answers 503 until it returns).

    parallel: slots (default: hearthlm.serve.scheduler.default_parallel); n_ctx: tokens
    per slot (default: the model's context, at most 4096); max_queue: requests waiting
    for a slot before 429 (default 4 x parallel); api_key: required as
    `Authorization: Bearer KEY` (all but /health); max_tokens: the most a request may
    ask for (default n_ctx); template: a chat template instead of the model's own;
    speculation: {"speculative": "prompt-lookup"} or {"draft_model": Model}, or a
    function returning it (called at startup, after the model loads): speculative
    decoding in every step (a request may cap it with speculative.n_max)."""
    loaded = not callable(model)
    load: Callable = (lambda: model) if loaded else model
    state = State(load, dict(model_name=model_name, parallel=parallel, n_ctx=n_ctx, max_queue=max_queue,
                             max_tokens=max_tokens, kv_dtype=kv_dtype, template=template,
                             speculation=speculation or {}), on_load_error)
    metrics = Metrics(lambda: state.scheduler)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        if loaded:  # only the slots to make: ready before the first request
            state.start()
        loading = None if loaded else asyncio.get_running_loop().run_in_executor(None, state.start)
        try:
            yield
        finally:
            if loading is not None:
                await loading
            await run_in_threadpool(state.close)

    async def chat_completions(request):
        return await _complete(request, state, metrics, P.parse_chat(await _read_json(request, max_body_bytes)))

    async def completions(request):
        return await _complete(request, state, metrics, P.parse_completion(await _read_json(request, max_body_bytes)))

    async def models(request):
        s = state.ready()
        return JSONResponse({"object": "list", "data": [_model_card(s)]})

    async def model_info(request):
        s = state.ready()
        if request.path_params["name"] != s.name:
            raise P.APIError(404, f"The model '{request.path_params['name']}' does not exist", param="model",
                             code="model_not_found")
        return JSONResponse(_model_card(s))

    async def health(request):
        if state.scheduler is None:
            status = {"status": "error", "error": state.error} if state.error else {"status": "loading"}
            return JSONResponse(status, 503, headers={"Retry-After": RETRY_AFTER})
        s = state.scheduler
        return JSONResponse({"status": "ok", "slots": len(s.slots), "slots_busy": s.busy_slots,
                             "queue_depth": s.queue_depth})

    async def tokenize(request):
        s = state.ready()
        body = await _read_json(request, max_body_bytes)
        if not isinstance(body, dict):
            raise P.APIError(400, "the request body must be a JSON object", code="invalid_type")
        if body.get("messages") is not None:
            req = P.parse_chat({"messages": body["messages"]})
            ids = (await run_in_threadpool(s.prompt_ids, req))[0]
        else:
            content = body.get("content")
            if not isinstance(content, str):
                raise P.invalid("content", f"expected a string, got {P.shown(content)}", "invalid_type")
            add_special = body.get("add_special", True)
            if not isinstance(add_special, bool):
                raise P.invalid("add_special", "expected a boolean", "invalid_type")
            ids = await run_in_threadpool(s.model.require_tokenizer().encode, content, add_special)
        return JSONResponse({"tokens": ids})

    async def detokenize(request):
        s = state.ready()
        body = await _read_json(request, max_body_bytes)
        tokens = body.get("tokens") if isinstance(body, dict) else None
        if not isinstance(tokens, list) or not all(P.is_int(t) for t in tokens):
            raise P.invalid("tokens", f"expected a list of token ids, got {P.shown(tokens)}", "invalid_type")
        ids = s.model.check_ids(tokens, "tokens")
        return JSONResponse({"content": s.model.require_tokenizer().decode(ids.tolist())})

    async def prometheus(request):
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    routes = [
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/models/{name:path}", model_info, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/tokenize", tokenize, methods=["POST"]),
        Route("/detokenize", detokenize, methods=["POST"]),
        Route("/metrics", prometheus, methods=["GET"]),
    ]
    handlers = {P.APIError: _api_error, HTTPException: _http_error, HearthlmError: _hearthlm_error,
                Exception: _server_error}
    app = Starlette(routes=routes, exception_handlers=handlers, lifespan=lifespan,
                    middleware=[Middleware(_Guard, api_key=api_key, metrics=metrics)])
    app.state.hearthlm = state
    return app


# -- completions -------------------------------------------------------------------

async def _complete(request, state: State, metrics: Metrics, req: P.Request) -> Response:
    t0 = time.perf_counter()
    s = state.ready()
    if req.stop and s.model.tokenizer is None:
        raise P.invalid("stop", "stop strings need a tokenizer, and this model has none")
    prompt, context = await run_in_threadpool(s.prompt_ids, req)
    prediction = await run_in_threadpool(s.prediction_ids, req)
    max_tokens = s.reply_tokens(req, len(prompt))
    calling, constraint = await run_in_threadpool(s.reply_rules, req) if req.kind == "chat" else (None, None)
    sampler = make_sampler(s.model, req.sampling)
    loop = asyncio.get_running_loop()
    events: asyncio.Queue = asyncio.Queue()
    job = Job(prompt, max_tokens, sampler, emit=lambda ev: loop.call_soon_threadsafe(events.put_nowait, ev),
              stop=req.stop, top_logprobs=req.top_logprobs, context=context, ignore_eos=req.ignore_eos,
              constraint=constraint, max_draft=req.max_draft, prediction=prediction)
    try:
        s.scheduler.submit(job)
    except Overloaded as e:
        raise P.APIError(429, f"The server is busy: {e}; retry later", code="rate_limit_exceeded",
                         type="requests", headers={"Retry-After": RETRY_AFTER}) from None
    except Unavailable as e:
        raise P.APIError(503, str(e), code="service_unavailable", headers={"Retry-After": RETRY_AFTER}) from None
    except ContextOverflowError as e:
        raise P.APIError(400, str(e), param="max_tokens", code="context_length_exceeded") from None
    reply = _Reply(req, s, metrics, t0, CallStream(calling, req.stop) if calling else None)
    if req.stream:
        return _EventStream(_sse(reply, job, events, s.scheduler), media_type="text/event-stream",
                            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    work = asyncio.ensure_future(_collect(reply, events))
    gone = asyncio.ensure_future(_disconnected(request.receive))
    try:
        await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not work.done():  # the client left (or the server is stopping): free the slot
            s.scheduler.cancel(job)
            work.cancel()
    if not work.done() or work.cancelled():
        return Response(status_code=499)  # nobody reads it
    finished = work.result()
    logprobs = reply.logprobs(reply.entries, 0) if req.top_logprobs is not None else None
    return JSONResponse(P.response(req, reply.id, reply.created, s.name, "".join(reply.text), finished, logprobs,
                                   reply.calls.calls() if reply.calls else None))


class _Reply:
    """One response being assembled: id, timestamps, text and logprobs so far; with
    tools, the text and calls come from `calls` (a CallStream of the reply's tokens)."""

    def __init__(self, req: P.Request, state: State, metrics: Metrics, t0: float,
                 calls: Optional[CallStream] = None):
        self.req, self.state, self.metrics, self.t0, self.calls = req, state, metrics, t0, calls
        self.id, self.created = P.new_id(req.kind), P.now()
        self.text: list[str] = []
        self.entries: list = []
        self.offset = 0
        self.first = True

    def add(self, delta: Delta) -> list:
        """-> the events to stream: text pieces (str) and, with tools, call deltas (dict)."""
        if self.first:
            self.metrics.time_to_first_token.observe(time.perf_counter() - self.t0)
            self.first = False
        self.entries += delta.logprobs
        if self.calls is None:
            events = [delta.text] if delta.text else []
        else:
            events = self.calls.add(delta.token) if delta.token is not None else []
        self.text += [e for e in events if isinstance(e, str)]
        return events

    def end(self, finished: Finished) -> tuple[list, Finished]:
        """-> (the last events, the finish with "tool_calls" as its reason when it called)."""
        if self.calls is None:
            return [], finished
        events = self.calls.finish()
        self.text += [e for e in events if isinstance(e, str)]
        if self.calls.ids and finished.reason != "cancelled":
            finished = dataclasses.replace(finished, reason="tool_calls")
        return events, finished

    def logprobs(self, entries, offset: int):
        if self.req.kind == "chat":
            return P.chat_logprobs(entries, self.state.token_text)
        return P.completion_logprobs(entries, self.state.token_text, offset)

    def done(self, finished: Finished) -> Finished:
        self.metrics.request_seconds.observe(time.perf_counter() - self.t0)
        return finished


async def _collect(reply: _Reply, events: asyncio.Queue) -> Finished:
    while True:
        ev = await events.get()
        if isinstance(ev, Delta):
            reply.add(ev)
        elif isinstance(ev, Finished):
            return reply.done(reply.end(ev)[1])
        else:
            raise _failure(ev)


async def _sse(reply: _Reply, job: Job, events: asyncio.Queue, scheduler: Scheduler):
    req, name = reply.req, reply.state.name
    ended = False
    try:
        if req.kind == "chat":
            yield _data(P.chunk(req, reply.id, reply.created, name, role=True))
        while True:
            ev = await events.get()
            if isinstance(ev, Delta):
                pieces = reply.add(ev)
                logprobs = reply.logprobs(ev.logprobs, reply.offset) if req.top_logprobs is not None else None
                if logprobs is not None and not pieces:  # the logprobs ride on the first piece
                    pieces = [""]
                for piece in pieces:
                    yield _chunk(reply, piece, logprobs)
                    logprobs = None
            elif isinstance(ev, Finished):
                ended = True
                pieces, ev = reply.end(ev)
                for piece in pieces:
                    yield _chunk(reply, piece, None)
                reply.done(ev)
                yield _data(P.chunk(req, reply.id, reply.created, name, finish=P.finish_reason(ev)))
                if req.include_usage:
                    yield _data(P.usage_chunk(req, reply.id, reply.created, name, ev))
                break
            else:
                ended = True
                yield _data(_failure(ev).body())
                break
        yield b"data: [DONE]\n\n"
    finally:
        if not ended:  # the client left mid-stream: free the slot now
            scheduler.cancel(job)


def _chunk(reply: _Reply, piece, logprobs) -> bytes:
    """A chunk with a text piece (str) or a tool-call delta (dict)."""
    if isinstance(piece, dict):
        return _data(P.chunk(reply.req, reply.id, reply.created, reply.state.name, logprobs=logprobs,
                             tool_call=piece))
    reply.offset += len(piece)
    return _data(P.chunk(reply.req, reply.id, reply.created, reply.state.name, text=piece, logprobs=logprobs))


def _failure(ev: Failed) -> P.APIError:
    if isinstance(ev.error, Unavailable):
        return P.APIError(503, str(ev.error), code="service_unavailable", headers={"Retry-After": RETRY_AFTER})
    return P.APIError(500, f"generation failed: {type(ev.error).__name__}: {ev.error}")


def _data(obj: dict) -> bytes:
    return b"data: " + json.dumps(obj, ensure_ascii=False).encode() + b"\n\n"


class _EventStream(StreamingResponse):
    """Server-sent events that stop as soon as the client disconnects (Starlette
    stops listening for that under ASGI 2.4, so a queued request would not notice)."""

    async def __call__(self, scope, receive, send):
        async with anyio.create_task_group() as tg:
            async def watch():
                await _disconnected(receive)
                tg.cancel_scope.cancel()

            tg.start_soon(watch)
            try:
                await self.stream_response(send)
            except OSError:
                pass  # the connection broke while sending
            finally:
                await self.body_iterator.aclose()
            tg.cancel_scope.cancel()


async def _disconnected(receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


# -- requests, errors, auth --------------------------------------------------------

async def _read_json(request, limit: int):
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise P.APIError(413, f"the request body of {length} bytes exceeds the limit of {limit}",
                         code="request_too_large")
    body, size = [], 0
    async for part in request.stream():
        size += len(part)
        if size > limit:
            raise P.APIError(413, f"the request body exceeds the limit of {limit} bytes", code="request_too_large")
        body.append(part)
    try:
        return json.loads(b"".join(body))
    except (ValueError, RecursionError) as e:
        raise P.APIError(400, f"We could not parse the JSON body of your request ({e}). The body must be "
                              "valid JSON.", code="invalid_json") from None


def _model_card(s: State) -> dict:
    return {"id": s.name, "object": "model", "created": s.created,
            "owned_by": "hearthlm", "max_model_len": s.scheduler.n_ctx}


def _error_response(e: P.APIError) -> JSONResponse:
    return JSONResponse(e.body(), e.status, headers=e.headers)


async def _api_error(request, e: P.APIError):
    return _error_response(e)


async def _hearthlm_error(request, e: HearthlmError):
    return _error_response(P.APIError(400, str(e)))


async def _http_error(request, e: HTTPException):
    code = {404: "unknown_url", 405: "method_not_allowed"}.get(e.status_code)
    message = f"{request.method} {request.url.path}: {e.detail}"
    return _error_response(P.APIError(e.status_code, message, code=code, headers=e.headers))


async def _server_error(request, e: Exception):
    return _error_response(P.APIError(500, f"internal error: {type(e).__name__}: {e}"))


class _Guard:
    """ASGI middleware: the API key, and the request counter by endpoint and status."""

    def __init__(self, app, api_key: Optional[str], metrics: Metrics):
        self.app, self.api_key, self.metrics = app, api_key, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = 500

        async def send_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            if self.api_key and scope["path"] not in OPEN_PATHS and not self._authorized(scope):
                e = P.APIError(401, "Incorrect or missing API key: send it as 'Authorization: Bearer KEY'",
                               code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
                await _error_response(e)(scope, receive, send_status)
            else:
                await self.app(scope, receive, send_status)
        finally:
            endpoint = scope["path"] if scope["path"] in ENDPOINTS else "other"
            self.metrics.requests.labels(endpoint, str(status)).inc()

    def _authorized(self, scope) -> bool:
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                return hmac.compare_digest(value, b"Bearer " + self.api_key.encode())
        return False

