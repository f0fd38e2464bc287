"""Verification of draft tokens (speculative decoding): several tokens per request in one pass.

A request with ``k`` draft tokens contributes ``k + 1`` rows of target logits: row ``t`` is the
model's distribution for the position of draft ``t``, the last row the one after every draft
(the bonus position). Greedy rows accept a draft while it is the argmax, then take the argmax.
Random rows use speculative rejection sampling (Leviathan et al. 2023; Chen et al. 2023), which
leaves the output distribution exactly the target's: draft ``x`` with draft probability ``q(x)``
is accepted with probability ``min(1, p(x) / q(x))``; at the first rejection the token is drawn
from ``max(0, p - q)`` renormalised; when every draft is accepted the bonus row is sampled. Drafts
without probabilities (n-gram or other deterministic proposers) count as ``q = one-hot``.

Everything is batched tensor work: one softmax over all rows, one comparison per draft, a cumulative
product for the accepted prefix of each request, one draw per request. A seeded request draws its
acceptance uniforms and its extra token's noise from its own generator (``generators``), so its
tokens depend on its seed and its drafts only, never on the other rows of the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class DraftBatch:
    """The drafts of a step, flattened in request order."""

    token_ids: torch.Tensor
    """[sum(num_drafts)] int64: the draft tokens."""
    num_drafts: list[int]
    """Drafts of each request (0 allowed: that request just samples its one row)."""
    probs: torch.Tensor | None = None
    """[sum(num_drafts), vocab] float32: the proposer's distribution at each draft, or None for
    deterministic drafts."""
    host_token_ids: list[int] | None = None
    """``token_ids`` as a host list when the caller has one (the runner does): validation and
    greedy verification read it instead of copying the device tensor back (a synchronisation
    that would wait for the forward pass before the verification is even launched)."""

    def host_tokens(self) -> list[int]:
        """The draft tokens on the host (``host_token_ids``, else copied from ``token_ids``)."""
        if self.host_token_ids is not None:
            return self.host_token_ids
        return [int(t) for t in self.token_ids.tolist()]

    def validate(self, num_rows: int, vocab: int) -> None:
        """Raise ``ValueError`` naming the mismatch when the drafts do not fit ``num_rows`` rows."""
        if any(k < 0 for k in self.num_drafts):
            raise ValueError(f"num_drafts must be >= 0 per request, got {self.num_drafts}")
        total = sum(self.num_drafts)
        if self.token_ids.dim() != 1 or self.token_ids.shape[0] != total:
            raise ValueError(f"token_ids must be [{total}] (sum of num_drafts), got {list(self.token_ids.shape)}")
        if num_rows != total + len(self.num_drafts):
            raise ValueError(
                f"expected {total + len(self.num_drafts)} logits rows (num_drafts + 1 per request), got {num_rows}"
            )
        if self.probs is not None and list(self.probs.shape) != [total, vocab]:
            raise ValueError(f"draft probs must be [{total}, {vocab}], got {list(self.probs.shape)}")
        if self.host_token_ids is not None and len(self.host_token_ids) != total:
            raise ValueError(f"host_token_ids must hold {total} tokens (sum of num_drafts), got {len(self.host_token_ids)}")
        tokens = self.host_tokens()
        if total and (min(tokens) < 0 or max(tokens) >= vocab):
            raise ValueError(f"draft token ids must be in [0, {vocab}), got {tokens}")


def verify_drafts(
    target_probs: torch.Tensor,
    drafts: DraftBatch,
    greedy: torch.Tensor,
    generator: torch.Generator | None = None,
    generators: dict[int, torch.Generator] | None = None,
) -> list[list[int]]:
    """Accepted tokens of each request: the accepted drafts then one more token (a correction at
    the first rejection, else the bonus), so ``1 .. num_drafts + 1`` tokens per request.

    target_probs: [sum(num_drafts + 1), vocab] float32, the distributions the sampler draws from
    (processors and warpers applied; for greedy rows only the argmax matters); greedy:
    [num_requests] bool; generators: request index -> its own generator (seeded requests)."""
    drafts.validate(target_probs.shape[0], target_probs.shape[1])
    n_req = len(drafts.num_drafts)
    if greedy.shape != (n_req,):
        raise ValueError(f"greedy must be [{n_req}] (one flag per request), got {list(greedy.shape)}")
    device = target_probs.device
    k = torch.tensor(drafts.num_drafts, device=device)
    rows_per_req = k + 1
    req_of_row = torch.repeat_interleave(torch.arange(n_req, device=device), rows_per_req)
    starts = torch.cumsum(rows_per_req, 0) - rows_per_req
    pos_of_row = torch.arange(target_probs.shape[0], device=device) - starts[req_of_row]
    is_draft_row = pos_of_row < k[req_of_row]
    draft_rows = is_draft_row.nonzero().squeeze(1)
    draft_tok = drafts.token_ids.to(device)

    # acceptance of each draft
    p_draft_tok = target_probs[draft_rows, draft_tok]
    if drafts.probs is None:
        q_draft_tok = torch.ones_like(p_draft_tok)
    else:
        q_draft_tok = drafts.probs.to(device)[torch.arange(draft_tok.shape[0], device=device), draft_tok]
    u = torch.rand(p_draft_tok.shape, generator=generator, device=device)
    flat_starts = torch.cumsum(k, 0) - k
    for i, gen in (generators or {}).items():
        lo = int(flat_starts[i])
        u[lo : lo + drafts.num_drafts[i]] = torch.rand(drafts.num_drafts[i], generator=gen, device=device)
    accept_random = u * q_draft_tok < p_draft_tok  # u < p / q without dividing by q = 0
    accept_greedy = target_probs[draft_rows].argmax(dim=-1) == draft_tok
    accept = torch.where(greedy[req_of_row[draft_rows]], accept_greedy, accept_random)

    # accepted prefix length per request: the position of its first row that is not an accepted
    # draft (its bonus row at the latest)
    ok = torch.zeros(target_probs.shape[0], dtype=torch.bool, device=device)
    ok[draft_rows] = accept
    stop_pos = torch.where(ok, rows_per_req[req_of_row], pos_of_row)
    n_acc = torch.zeros(n_req, dtype=torch.int64, device=device).scatter_reduce(
        0, req_of_row, stop_pos, reduce="amin", include_self=False
    )

    # the extra token: drawn at row (start + n_acc) from p (bonus, or greedy) or max(0, p - q)
    extra_rows = starts + n_acc
    p = target_probs[extra_rows]
    rejected = n_acc < k
    residual = p.clone()
    if rejected.any():
        rej_req = rejected.nonzero().squeeze(1)
        # that draft's index in the flat list: its row less one bonus row per earlier request
        flat_draft = starts[rej_req] + n_acc[rej_req] - rej_req
        if drafts.probs is None:
            q = torch.zeros_like(p[rej_req])
            q[torch.arange(rej_req.shape[0], device=device), draft_tok[flat_draft]] = 1.0
        else:
            q = drafts.probs.to(device)[flat_draft]
        res = (p[rej_req] - q).clamp_min(0.0)
        mass = res.sum(dim=-1, keepdim=True)
        # p == q exactly leaves no mass (acceptance was then certain): keep p
        residual[rej_req] = torch.where(mass > 0, res / mass.clamp_min(1e-30), p[rej_req])
    noise = torch.empty_like(residual).exponential_(generator=generator)
    for i, gen in (generators or {}).items():
        noise[i].exponential_(generator=gen)
    sampled = (residual / noise).argmax(dim=-1)
    extra = torch.where(greedy, p.argmax(dim=-1), sampled)

    out: list[list[int]] = []
    drafts_list = draft_tok.tolist()
    n_acc_list, extra_list = n_acc.tolist(), extra.tolist()
    offset = 0
    for i, ki in enumerate(drafts.num_drafts):
        out.append(drafts_list[offset : offset + n_acc_list[i]] + [extra_list[i]])
        offset += ki
    return out


def verify_greedy(target: torch.Tensor, drafts: DraftBatch) -> list[list[int]]:
    """Greedy requests only: accept drafts while they equal ``target`` (the argmax of each row,
    [sum(num_drafts + 1)] int64), then take the argmax. No probabilities, no random draws; the
    same result as ``verify_drafts`` with every request greedy. One device-to-host copy: the
    target's argmaxes (the drafts are read from ``host_token_ids`` when given)."""
    tgt, draft = target.tolist(), drafts.host_tokens()
    out: list[list[int]] = []
    row = offset = 0
    for k in drafts.num_drafts:
        n = 0
        while n < k and draft[offset + n] == tgt[row + n]:
            n += 1
        out.append(draft[offset : offset + n] + [tgt[row + n]])
        row += k + 1
        offset += k
    return out
