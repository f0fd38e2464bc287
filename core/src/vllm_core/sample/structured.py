"""Structured outputs with xgrammar, as a runner extension: a grammar matcher per constrained
request, a token bitmask per step for its row, applied by the sampler before anything else draws
from the logits.

* Admission (``check_structured``) compiles the constraint once on the front end, so a bad
  schema / regex / grammar, or one that admits no output at all, is a ``RequestError`` at once.
* In the engine core, ``StructuredOutputs`` (registered through ``register_runner_extensions``
  like any plugin's extension) compiles it again in a background thread as soon as the request
  arrives (a compiled grammar is large and does not cross processes). Until it is ready the
  request is not ready to schedule (``is_ready``), so the other rows' steps run on and never
  wait for it. Grammars are cached by their spec.
* After sampling, the extension feeds each constrained row's token to its matcher; the next
  step's bitmask follows from the matcher's state, which is the runner's own (async scheduling
  safe). Constrained requests get no draft tokens (the proposers skip them).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from vllm_core.errors import RequestError
from vllm_core.extensions.runner import RunnerContext, RunnerExtension, SampledTokens
from vllm_core.extensions.state import ExtensionState
from vllm_core.sample.token_mask import TokenBitmask, apply_token_bitmask, merge_token_bitmasks
from vllm_core.sampling_params import SamplingParams, StructuredOutputsParams

if TYPE_CHECKING:
    from vllm_core.core.sched_output import ScheduledRequest

__all__ = [
    "GrammarCompiler", "StructuredOutputs", "TokenBitmask", "apply_token_bitmask", "check_structured",
    "merge_token_bitmasks",
]

logger = logging.getLogger(__name__)


def _xgrammar() -> Any:
    try:
        import xgrammar
    except ImportError as exc:
        raise RequestError("structured outputs need xgrammar: pip install xgrammar") from exc
    return xgrammar


class GrammarCompiler:
    """xgrammar's compiler for one tokenizer and vocabulary size, with a cache by spec."""

    def __init__(self, tokenizer: Any, vocab_size: int) -> None:
        xgr = _xgrammar()
        self.vocab_size = vocab_size
        self.info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size)
        self._compiler = xgr.GrammarCompiler(self.info)
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, str], Any] = {}

    def compile(self, params: StructuredOutputsParams) -> Any:
        """The compiled grammar; raises ``RequestError`` naming xgrammar's complaint."""
        key = params.key()
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None:
            return hit
        try:
            grammar = self._compile(params)
        except RuntimeError as exc:
            message = str(exc).strip().splitlines()[-1] if str(exc).strip() else repr(exc)
            raise RequestError(f"invalid structured output constraint ({key[0]}): {message}") from exc
        with self._lock:
            self._cache[key] = grammar
        return grammar

    def _compile(self, p: StructuredOutputsParams) -> Any:
        c = self._compiler
        if p.json is not None:
            return c.compile_json_schema(p.json, any_whitespace=not p.disable_any_whitespace)
        if p.regex is not None:
            return c.compile_regex(p.regex)
        if p.choice is not None:
            import json

            alternatives = " | ".join(json.dumps(choice, ensure_ascii=False) for choice in p.choice)
            return c.compile_grammar(f"root ::= {alternatives}")
        if p.grammar is not None:
            return c.compile_grammar(p.grammar)
        return c.compile_builtin_json_grammar()


_COMPILERS: dict[tuple[int, int], GrammarCompiler] = {}


def compiler_for(tokenizer: Any, vocab_size: int) -> GrammarCompiler:
    key = (id(tokenizer), vocab_size)
    compiler = _COMPILERS.get(key)
    if compiler is None:
        compiler = _COMPILERS[key] = GrammarCompiler(tokenizer, vocab_size)
    return compiler


def check_structured(params: StructuredOutputsParams, tokenizer: Any, vocab_size: int) -> None:
    """Admission: the constraint compiles and admits at least one first token."""
    if tokenizer is None:
        raise RequestError("structured outputs need a tokenizer (the engine runs without one)")
    xgr = _xgrammar()
    compiler = compiler_for(tokenizer, vocab_size)
    matcher = xgr.GrammarMatcher(compiler.compile(params))
    bitmask = xgr.allocate_token_bitmask(1, compiler.info.vocab_size)
    matcher.fill_next_token_bitmask(bitmask, 0)
    if not bool(bitmask.any()):
        raise RequestError(f"the structured output constraint ({params.key()[0]}) admits no output at all")


class StructuredOutputs(RunnerExtension):
    """The engine core's grammar matchers, one per constrained request."""

    name: ClassVar[str] = "structured_outputs"

    @classmethod
    def create(cls, context: RunnerContext) -> StructuredOutputs | None:
        return cls(context.tokenizer, context.vocab_size)

    def __init__(self, tokenizer: Any, vocab_size: int) -> None:
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        self._compiler: GrammarCompiler | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._grammars: dict[str, Future[Any]] = {}
        self._matchers: dict[str, Any] = {}

    def add_request(self, req_id: str, params: SamplingParams, extensions: ExtensionState | None = None) -> None:
        """Start compiling the request's grammar in the background."""
        self._start(req_id, params.structured_outputs)

    def _start(self, req_id: str, params: StructuredOutputsParams | None) -> None:
        if params is None or self.tokenizer is None:
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="grammar")
        self._grammars[req_id] = self._pool.submit(self._compile, params)

    def is_ready(self, req_id: str) -> bool:
        """False while the request's grammar is still compiling: the scheduler leaves it waiting
        rather than let its first sample block the step."""
        future = self._grammars.get(req_id)
        return future is None or future.done()

    def _compile(self, params: StructuredOutputsParams) -> Any:
        if self._compiler is None:
            self._compiler = GrammarCompiler(self.tokenizer, self.vocab_size)
        return self._compiler.compile(params)

    def _matcher(self, row: ScheduledRequest) -> Any:
        matcher = self._matchers.get(row.req_id)
        if matcher is None:
            future = self._grammars.pop(row.req_id, None)
            if future is None:  # added without add_request (tests, profiling)
                self._start(row.req_id, row.sampling_params.structured_outputs)
                future = self._grammars.pop(row.req_id)
            matcher = self._matchers[row.req_id] = _xgrammar().GrammarMatcher(future.result())
        return matcher

    def logits_mask(self, rows: Sequence[ScheduledRequest], device: torch.device) -> TokenBitmask | None:
        """The step's bitmask for the constrained rows (None when there are none).

        A request with drafts has consecutive rows (``vllm_core.worker.multi_token``): row ``t``
        follows drafts ``1 .. t``, so the matcher accepts each draft before filling the next
        row, then rolls back. Past a draft the grammar refuses, rows allow everything: the row
        before already gives that draft probability 0, so verification stops there."""
        constrained = [j for j, r in enumerate(rows) if r.sampling_params.structured_outputs is not None]
        if not constrained or self.tokenizer is None:
            return None
        xgr = _xgrammar()
        bits = xgr.allocate_token_bitmask(len(constrained), self.vocab_size)
        advanced, refused, prev = 0, False, None
        for k, j in enumerate(constrained):
            row = rows[j]
            matcher = self._matcher(row)
            if prev is not None and prev.req_id == row.req_id and j == constrained[k - 1] + 1:
                # the next row of the same request: one more draft (the last token of its output)
                if not refused and not matcher.is_terminated():
                    refused = not matcher.accept_token(int(row.output_token_ids[-1]))
                    advanced += 0 if refused else 1
            else:
                if prev is not None and advanced:
                    self._matchers[prev.req_id].rollback(advanced)
                advanced, refused = 0, False
            prev = row
            if refused or matcher.is_terminated():
                bits[k] = -1  # complete (EOS / stop rules end it) or past a refused draft: no mask
            else:
                matcher.fill_next_token_bitmask(bits, k)
        if prev is not None and advanced:
            self._matchers[prev.req_id].rollback(advanced)
        return TokenBitmask(torch.tensor(constrained, dtype=torch.int64).to(device), bits.to(device))

    def accept_tokens(self, rows: Sequence[ScheduledRequest], sampled: SampledTokens) -> None:
        """Advance the constrained rows' matchers by the tokens just sampled."""
        constrained = [j for j, r in enumerate(rows) if r.req_id in self._matchers]
        if not constrained:
            return
        for j, tokens in zip(constrained, sampled.rows(constrained)):
            matcher = self._matchers[rows[j].req_id]
            for token in tokens:
                if matcher.is_terminated():
                    break
                if not matcher.accept_token(int(token)):
                    logger.error("request %s: sampled token %d rejected by its grammar", rows[j].req_id, token)

    def finish_requests(self, req_ids: set[str]) -> None:
        for rid in req_ids:
            self._matchers.pop(rid, None)
            self._grammars.pop(rid, None)
