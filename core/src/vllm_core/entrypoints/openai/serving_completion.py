"""``POST /v1/completions``: one engine request per prompt, ``n`` samples each.

Prompt logprobs as vLLM serves them (what lm-evaluation-harness's loglikelihood needs):
``echo=true`` with ``logprobs=N`` puts the prompt tokens' logprobs (the first one null) in front
of the generated ones, and ``max_tokens=0`` with ``echo`` returns the prompt alone (one token is
generated and dropped); ``prompt_logprobs=N`` adds each choice's ``prompt_logprobs`` list.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from vllm_core.beam_search import beam_search_async
from vllm_core.engine.async_llm import run_to_completion
from vllm_core.entrypoints.openai.errors import APIError
from vllm_core.entrypoints.openai.logprobs import completion_logprobs, prompt_logprobs_json
from vllm_core.entrypoints.openai.protocol import (
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
    UsageInfo,
    random_id,
)
from vllm_core.entrypoints.openai.serving_engine import (
    SSE_DONE,
    ServingBase,
    compact_json,
    fast_sse,
    merge,
    sse,
    stop_holdback,
    text_delta,
)
from vllm_core.outputs import CompletionOutput, RequestOutput

_encode_str = json.encoder.encode_basestring  # type: ignore[attr-defined]
"""A JSON string literal with non-ASCII kept (what ``compact_json`` writes for a string)."""


class ServingCompletion(ServingBase):
    def _prompts(self, req: CompletionRequest) -> list[dict[str, Any]]:
        """Each prompt as ``{"prompt": text, "prompt_token_ids": ids}``."""
        p = req.prompt
        if isinstance(p, str):
            raw: list[str | list[int]] = [p]
        elif p and all(isinstance(t, int) for t in p):
            raw = [p]  # type: ignore[list-item]
        else:
            raw = list(p)  # type: ignore[arg-type]
        if not raw:
            raise APIError("prompt must not be empty", 400, "prompt")
        tok = self.engine.tokenizer
        out: list[dict[str, Any]] = []
        for item in raw:
            if isinstance(item, str):
                if tok is None:
                    raise APIError("this model has no tokenizer: send prompts as token ids", 400, "prompt")
                self.check_text_length(item, req.max_tokens, req.truncate_prompt_tokens)
                ids = tok.encode(item, add_special_tokens=req.add_special_tokens)
                out.append({"prompt": item, "prompt_token_ids": self.truncate(ids, req.truncate_prompt_tokens)})
            else:
                ids = self.truncate(list(item), req.truncate_prompt_tokens)
                text = tok.decode(ids) if tok is not None and req.echo else None
                out.append({"prompt": text, "prompt_token_ids": ids})
        if req.cache_salt is not None:
            for prompt in out:
                prompt["cache_salt"] = req.cache_salt
        return out

    async def _submit(
        self, req: CompletionRequest, base_id: str
    ) -> tuple[list[dict[str, Any]], list[AsyncIterator[RequestOutput]]]:
        self.check_model(req.model)
        if req.suffix:
            raise APIError("suffix is not supported", 400, "suffix")
        if req.max_tokens == 0 and not req.echo:
            raise APIError("max_tokens must be at least 1, got 0 (0 is only allowed with echo=true)", 400,
                           "max_tokens")
        if _has_text(req.prompt) or req.echo:
            prompts = await self.engine.run_in_tokenizer_thread(self._prompts, req)
        else:
            prompts = self._prompts(req)  # token ids only: nothing to tokenize
        self.check_n(req.n, len(prompts), req.best_of)
        width = req.best_of or req.n
        self.check_capacity(len(prompts) * (width if req.use_beam_search else 1))
        for p in prompts:
            self.check_length(len(p["prompt_token_ids"]), req.max_tokens)
        args = self.request_args_for(req.model)
        if req.use_beam_search:
            if req.prompt_logprobs is not None or (req.echo and req.logprobs is not None) or _echo_only(req):
                raise APIError("use_beam_search cannot return prompt logprobs; leave out prompt_logprobs, or "
                               "echo with logprobs / max_tokens=0", 400, "use_beam_search")
            return prompts, self._beam_search(req, prompts, base_id, width, args)
        extra: dict[str, Any] = {"logprobs": req.logprobs} if req.logprobs is not None else {}
        if req.best_of is not None:
            extra["best_of"] = req.best_of
        prompt_logprobs = _num_prompt_logprobs(req)
        if prompt_logprobs is not None:
            extra["prompt_logprobs"] = prompt_logprobs
        params = req.sampling_params(1 if _echo_only(req) else req.max_tokens, None, **extra)
        gens: list[AsyncIterator[RequestOutput]] = []
        rids: list[str] = []
        try:
            for i, p in enumerate(prompts):
                rid = f"{base_id}-{i}"
                gens.append(await self.engine.submit_async(p, params, rid, **args))
                rids.append(rid)
        except BaseException:
            for rid in rids:
                self.engine.abort(rid)
            raise
        return prompts, gens

    def _beam_search(self, req: CompletionRequest, prompts: list[dict[str, Any]], base_id: str,
                     width: int, args: dict[str, Any]) -> list[AsyncIterator[RequestOutput]]:
        """One beam search per prompt, ``width`` beams, the ``n`` best returned."""
        if req.logprobs is not None and req.logprobs > 2 * width:
            raise APIError(f"with use_beam_search, logprobs can be at most 2 * beam width = {2 * width} "
                           f"(the candidates each step scores), got {req.logprobs}", 400, "logprobs")
        gens = []
        for i, p in enumerate(prompts):
            max_tokens = req.max_tokens
            if max_tokens is None:
                max_tokens = self.engine.max_model_len - len(p["prompt_token_ids"])
            params = req.beam_search_params(max_tokens, width)
            gens.append(beam_search_async(self.engine, p, params, f"{base_id}-{i}", req.n, req.skip_special_tokens,
                                          req.include_stop_str_in_output, args))
        return gens

    def _logprobs(self, req: CompletionRequest, token_ids: list[int], logprobs: Any, offset: int) -> Any:
        if req.logprobs is None or logprobs is None:
            return None
        return completion_logprobs(token_ids, logprobs, self.engine.tokenizer, req.logprobs, offset)

    def _choice(self, req: CompletionRequest, index: int, prompt: dict[str, Any], out: RequestOutput,
                c: CompletionOutput) -> CompletionChoice:
        """One finished choice; under ``echo`` its text, tokens and logprobs start with the prompt's."""
        token_ids, lps, text = c.token_ids, c.logprobs, c.text
        finish = c.finish_reason
        if req.echo:
            prompt_lps: list[Any] = list(out.prompt_logprobs or [None] * len(out.prompt_token_ids))
            prefix = prompt["prompt"] or ""
            if _echo_only(req):
                token_ids, lps, text = out.prompt_token_ids, prompt_lps, prefix
            else:
                token_ids = [*out.prompt_token_ids, *c.token_ids]
                lps = None if c.logprobs is None else [*prompt_lps, *c.logprobs]
                text = prefix + c.text
        plp = prompt_logprobs_json(out.prompt_logprobs) if req.prompt_logprobs is not None else None
        ids = (list(out.prompt_token_ids), list(c.token_ids)) if req.return_token_ids else (None, None)
        return CompletionChoice(index=index, text=text, logprobs=self._logprobs(req, token_ids, lps, 0),
                                finish_reason=finish, stop_reason=c.stop_reason, prompt_logprobs=plp,
                                prompt_token_ids=ids[0], token_ids=ids[1])

    async def create(self, req: CompletionRequest) -> CompletionResponse | AsyncIterator[str]:
        base_id = req.request_id or random_id("cmpl")
        prompts, gens = await self._submit(req, base_id)
        model = req.model or self.model_name
        # As vLLM: choices ranked at the end (best_of > n, beam search) cannot stream; a streaming
        # request gets the whole response as one event.
        ranked = req.use_beam_search or (req.best_of is not None and req.best_of != req.n)
        if req.stream and not ranked:
            return self._stream(req, base_id, model, prompts, gens)
        outs = await run_to_completion(gens)
        choices = [self._choice(req, i * req.n + c.index, prompts[i], out, c)
                   for i, out in enumerate(outs) for c in out.outputs]
        response = CompletionResponse(id=base_id, model=model, choices=choices, usage=_usage(outs, _echo_only(req)))
        return _one_event(response) if req.stream else response

    async def _stream(
        self, req: CompletionRequest, base_id: str, model: str, prompts: list[dict[str, Any]],
        gens: list[AsyncIterator[RequestOutput]],
    ) -> AsyncIterator[str]:
        created = int(time.time())
        sent: dict[tuple[int, int], int] = {}
        finished: set[tuple[int, int]] = set()
        last: dict[int, RequestOutput] = {}
        holdback = stop_holdback(req.stop)
        tokens_sent: dict[tuple[int, int], int] = {}
        offsets: dict[tuple[int, int], int] = {}

        continuous = req.stream_options is not None and req.stream_options.include_usage and \
            req.stream_options.continuous_usage_stats
        head = {"id": base_id, "object": "text_completion", "created": created, "model": model}

        def chunk(index: int, text: str, finish: str | None = None, stop: Any = None, logprobs: Any = None,
                  prompt_logprobs: Any = None, token_ids: list[int] | None = None,
                  prompt_token_ids: list[int] | None = None) -> str:
            # The hot path of a stream: plain dicts in CompletionResponse's field order, dumped the way
            # pydantic dumps them (compact, UTF-8), at about half the cost of building the models.
            choice = {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish, "stop_reason": stop,
                      "prompt_logprobs": prompt_logprobs, "prompt_token_ids": prompt_token_ids, "token_ids": token_ids}
            usage = None
            if continuous:
                out = last[index // req.n]
                done = sum(len(c.token_ids) for c in out.outputs if c.index == index % req.n)
                usage = {"prompt_tokens": len(out.prompt_token_ids), "completion_tokens": done,
                         "total_tokens": len(out.prompt_token_ids) + done, "prompt_tokens_details": None}
            return fast_sse({**head, "choices": [choice], "usage": usage})

        # The commonest chunk (new text and token ids, nothing else) from a template rendered once:
        # byte for byte what chunk() writes, without building and encoding the dicts.
        plain = ChunkTemplate(head) if not continuous else None

        started: set[int] = set()
        echo_only = _echo_only(req)
        async for i, out in merge(gens):
            last[i] = out
            if i not in started and (out.prompt_logprobs is not None or _num_prompt_logprobs(req) is None
                                     or len(out.prompt_token_ids) == 1 or out.finished):
                # The first event of each choice: the echoed prompt and the prompt logprobs.
                started.add(i)
                plp = prompt_logprobs_json(out.prompt_logprobs) if req.prompt_logprobs is not None else None
                pids = list(out.prompt_token_ids) if req.return_token_ids else None
                for j in range(req.n):
                    if req.echo:
                        lps = self._logprobs(req, out.prompt_token_ids, out.prompt_logprobs or
                                             [None] * len(out.prompt_token_ids), 0)
                        prefix = prompts[i]["prompt"] or ""
                        offsets[(i, j)] = len(prefix)
                        yield chunk(i * req.n + j, prefix, logprobs=lps, prompt_logprobs=plp, prompt_token_ids=pids)
                    elif plp is not None or pids is not None:
                        yield chunk(i * req.n + j, "", prompt_logprobs=plp, prompt_token_ids=pids)
            for c in out.outputs:
                key = (i, c.index)
                if key in finished:
                    continue
                done = c.finish_reason is not None
                if echo_only:
                    if done:
                        finished.add(key)
                        yield chunk(i * req.n + c.index, "", c.finish_reason, c.stop_reason)
                    continue
                delta, sent[key] = text_delta(c.text, sent.get(key, 0), done, holdback)
                new_tokens = req.return_token_ids and len(c.token_ids) > tokens_sent.get(key, 0)
                if not delta and not done and not new_tokens:
                    continue  # (without a tokenizer there is no text: token ids still stream)
                k = tokens_sent.get(key, 0)
                tokens_sent[key] = len(c.token_ids)
                lps = self._logprobs(req, c.token_ids[k:], c.logprobs[k:] if c.logprobs else None,
                                     offsets.get(key, 0))
                offsets[key] = offsets.get(key, 0) + len(delta)
                if done:
                    finished.add(key)
                new_ids = list(c.token_ids[k:]) if req.return_token_ids else None
                if plain is not None and lps is None and not done and c.stop_reason is None:
                    yield plain.render(i * req.n + c.index, delta, new_ids)
                else:
                    yield chunk(i * req.n + c.index, delta, c.finish_reason, c.stop_reason, lps, token_ids=new_ids)
        if req.stream_options is not None and req.stream_options.include_usage:
            usage = _usage([last[i] for i in sorted(last)], echo_only)
            yield sse({"id": base_id, "object": "text_completion", "created": created, "model": model,
                       "choices": [], "usage": usage.model_dump()})
        yield SSE_DONE


class ChunkTemplate:
    """A streamed completion chunk carrying only text and token ids, rendered from a template:
    the same bytes as ``fast_sse`` of the chunk's dict (compact JSON, UTF-8, field order) at a
    fraction of its cost (a stream's per-token hot path)."""

    def __init__(self, head: dict[str, Any]) -> None:
        prefix = compact_json({**head, "choices": []})[:-2]  # ... "choices":[  (then the choice)
        self.prefix = f'data: {prefix}{{"index":'
        self.middle = ',"logprobs":null,"finish_reason":null,"stop_reason":null,"prompt_logprobs":null,' \
                      '"prompt_token_ids":null,"token_ids":'
        self.suffix = '}],"usage":null}\n\n'

    def render(self, index: int, text: str, token_ids: list[int] | None) -> str:
        ids = "null" if token_ids is None else f"[{','.join(map(str, token_ids))}]"
        return f'{self.prefix}{index},"text":{_encode_str(text)}{self.middle}{ids}{self.suffix}'


async def _one_event(response: CompletionResponse) -> AsyncIterator[str]:
    yield sse(response)
    yield SSE_DONE


def _has_text(prompt: Any) -> bool:
    return isinstance(prompt, str) or (isinstance(prompt, list) and any(isinstance(p, str) for p in prompt))


def _echo_only(req: CompletionRequest) -> bool:
    """``echo`` with ``max_tokens=0``: the prompt (and its logprobs) alone, nothing generated."""
    return req.echo and req.max_tokens == 0


def _num_prompt_logprobs(req: CompletionRequest) -> int | None:
    """The engine's ``prompt_logprobs``: asked for, or ``logprobs`` when the prompt is echoed."""
    if req.prompt_logprobs is not None:
        return max(req.prompt_logprobs, req.logprobs or 0) if req.echo else req.prompt_logprobs
    return req.logprobs if req.echo else None


def _usage(outs: list[RequestOutput], echo_only: bool = False) -> UsageInfo:
    prompt = sum(len(o.prompt_token_ids) for o in outs)
    completion = 0 if echo_only else sum(len(c.token_ids) for o in outs for c in o.outputs)
    return UsageInfo(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)
