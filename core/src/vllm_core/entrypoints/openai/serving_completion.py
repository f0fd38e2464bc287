"""``POST /v1/completions``: one engine request per prompt, ``n`` samples each."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from vllm_core.beam_search import beam_search_async
from vllm_core.engine.async_llm import run_to_completion
from vllm_core.entrypoints.openai.errors import APIError
from vllm_core.entrypoints.openai.logprobs import completion_logprobs
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
    merge,
    sse,
    stop_holdback,
    text_delta,
)
from vllm_core.outputs import RequestOutput


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
        if req.prompt_logprobs is not None:
            raise APIError("prompt_logprobs is not supported by the server yet", 400, "prompt_logprobs")
        prompts = await self.engine.run_in_tokenizer_thread(self._prompts, req)
        self.check_n(req.n, len(prompts), req.best_of)
        width = req.best_of or req.n
        self.check_capacity(len(prompts) * (width if req.use_beam_search else 1))
        for p in prompts:
            self.check_length(len(p["prompt_token_ids"]), req.max_tokens)
        if req.use_beam_search:
            return prompts, self._beam_search(req, prompts, base_id, width)
        extra: dict[str, Any] = {"logprobs": req.logprobs} if req.logprobs is not None else {}
        if req.best_of is not None:
            extra["best_of"] = req.best_of
        params = req.sampling_params(req.max_tokens, None, **extra)
        gens: list[AsyncIterator[RequestOutput]] = []
        rids: list[str] = []
        try:
            for i, p in enumerate(prompts):
                rid = f"{base_id}-{i}"
                gens.append(await self.engine.submit_async(p, params, rid))
                rids.append(rid)
        except BaseException:
            for rid in rids:
                self.engine.abort(rid)
            raise
        return prompts, gens

    def _beam_search(self, req: CompletionRequest, prompts: list[dict[str, Any]], base_id: str,
                     width: int) -> list[AsyncIterator[RequestOutput]]:
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
                                          req.include_stop_str_in_output))
        return gens

    def _logprobs(self, req: CompletionRequest, token_ids: list[int], logprobs: Any, offset: int) -> Any:
        if req.logprobs is None or logprobs is None:
            return None
        return completion_logprobs(token_ids, logprobs, self.engine.tokenizer, req.logprobs, offset)

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
        choices = []
        for i, out in enumerate(outs):
            for c in out.outputs:
                prefix = (prompts[i]["prompt"] or "") if req.echo else ""
                choices.append(
                    CompletionChoice(index=i * req.n + c.index, text=prefix + c.text,
                                     logprobs=self._logprobs(req, c.token_ids, c.logprobs, len(prefix)),
                                     finish_reason=c.finish_reason, stop_reason=c.stop_reason)
                )
        response = CompletionResponse(id=base_id, model=model, choices=choices, usage=_usage(outs))
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

        def chunk(index: int, text: str, finish: str | None = None, stop: Any = None, logprobs: Any = None) -> str:
            choice = CompletionChoice(index=index, text=text, logprobs=logprobs, finish_reason=finish, stop_reason=stop)
            return sse(CompletionResponse(id=base_id, created=created, model=model, choices=[choice]))

        if req.echo:
            for i, p in enumerate(prompts):
                for j in range(req.n):
                    yield chunk(i * req.n + j, p["prompt"] or "")
        async for i, out in merge(gens):
            last[i] = out
            for c in out.outputs:
                key = (i, c.index)
                if key in finished:
                    continue
                done = c.finish_reason is not None
                delta, sent[key] = text_delta(c.text, sent.get(key, 0), done, holdback)
                if not delta and not done:
                    continue
                k = tokens_sent.get(key, 0)
                tokens_sent[key] = len(c.token_ids)
                lps = self._logprobs(req, c.token_ids[k:], c.logprobs[k:] if c.logprobs else None,
                                     offsets.get(key, 0))
                offsets[key] = offsets.get(key, 0) + len(delta)
                if done:
                    finished.add(key)
                yield chunk(i * req.n + c.index, delta, c.finish_reason, c.stop_reason, lps)
        if req.stream_options is not None and req.stream_options.include_usage:
            usage = _usage([last[i] for i in sorted(last)])
            yield sse({"id": base_id, "object": "text_completion", "created": created, "model": model,
                       "choices": [], "usage": usage.model_dump()})
        yield SSE_DONE


async def _one_event(response: CompletionResponse) -> AsyncIterator[str]:
    yield sse(response)
    yield SSE_DONE


def _usage(outs: list[RequestOutput]) -> UsageInfo:
    prompt = sum(len(o.prompt_token_ids) for o in outs)
    completion = sum(len(c.token_ids) for o in outs for c in o.outputs)
    return UsageInfo(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)
