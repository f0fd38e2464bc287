"""Structured outputs with xgrammar: a grammar matcher per constrained request, a token bitmask
per step for its row, applied by the sampler before anything else draws from the logits.

* Admission (``check_structured``) compiles the constraint once on the front end, so a bad
  schema / regex / grammar, or one that admits no output at all, is a ``RequestError`` at once.
* The engine core (``StructuredOutputManager``) compiles it again in a background thread as soon
  as the request arrives (a compiled grammar is large and does not cross processes). Until it
  is ready the scheduler leaves the request waiting (``is_ready``), so the other rows' steps run
  on and never wait for it. Grammars are cached by their spec.
* After sampling, the runner feeds each constrained row's token to its matcher; the next step's
  bitmask follows from the matcher's state, which is the runner's own (async scheduling safe).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from vllm_core.errors import RequestError
from vllm_core.sampling_params import StructuredOutputsParams

if TYPE_CHECKING:
    from vllm_core.core.sched_output import ScheduledRequest

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


@dataclass
class TokenBitmask:
    """Allowed tokens of the constrained rows."""

    rows: torch.Tensor
    """[K] int64: rows of the step's sampling batch."""
    bits: torch.Tensor
    """[K, ceil(vocab / 32)] int32: bit j of word w allows token 32 * w + j."""


def apply_token_bitmask(logits: torch.Tensor, bitmask: TokenBitmask) -> torch.Tensor:
    """Disallowed tokens of the constrained rows -> -inf (a new tensor)."""
    vocab = logits.shape[-1]
    shifts = torch.arange(32, device=logits.device, dtype=torch.int32)
    allowed = ((bitmask.bits.unsqueeze(-1) >> shifts) & 1).bool().flatten(1)[:, :vocab]
    banned = torch.zeros_like(logits, dtype=torch.bool)
    banned[bitmask.rows] = ~allowed
    return logits.masked_fill(banned, float("-inf"))


class StructuredOutputManager:
    """The engine core's grammar matchers, one per constrained request."""

    def __init__(self, tokenizer: Any, vocab_size: int) -> None:
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        self._compiler: GrammarCompiler | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._grammars: dict[str, Future[Any]] = {}
        self._matchers: dict[str, Any] = {}

    def add_request(self, req_id: str, params: StructuredOutputsParams | None) -> None:
        """Start compiling the request's grammar in the background."""
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
                self.add_request(row.req_id, row.sampling_params.structured_outputs)
                future = self._grammars.pop(row.req_id)
            matcher = self._matchers[row.req_id] = _xgrammar().GrammarMatcher(future.result())
        return matcher

    def bitmask(self, rows: Sequence[ScheduledRequest], device: torch.device) -> TokenBitmask | None:
        """The step's bitmask for the constrained rows (None when there are none)."""
        constrained = [j for j, r in enumerate(rows) if r.sampling_params.structured_outputs is not None]
        if not constrained or self.tokenizer is None:
            return None
        xgr = _xgrammar()
        bits = xgr.allocate_token_bitmask(len(constrained), self.vocab_size)
        for k, j in enumerate(constrained):
            matcher = self._matcher(rows[j])
            if matcher.is_terminated():
                bits[k] = -1  # complete: EOS / stop rules end it, nothing is masked
            else:
                matcher.fill_next_token_bitmask(bits, k)
        return TokenBitmask(torch.tensor(constrained, dtype=torch.int64).to(device), bits.to(device))

    def accept(self, rows: Sequence[ScheduledRequest], sampled: torch.Tensor) -> None:
        """Advance the constrained rows' matchers by the tokens just sampled."""
        constrained = [j for j, r in enumerate(rows) if r.req_id in self._matchers]
        if not constrained:
            return
        tokens = sampled[torch.tensor(constrained, device=sampled.device)].tolist()
        for j, token in zip(constrained, tokens):
            matcher = self._matchers[rows[j].req_id]
            if not matcher.is_terminated() and not matcher.accept_token(int(token)):
                logger.error("request %s: sampled token %d rejected by its grammar", rows[j].req_id, token)

    def finish(self, req_ids: set[str]) -> None:
        for rid in req_ids:
            self._matchers.pop(rid, None)
            self._grammars.pop(rid, None)
