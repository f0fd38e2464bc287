"""Speculative decoding: proposers draft tokens, the model verifies them in one multi-token step.

``Proposer`` (``proposer``) is what a method implements and registers through
``register_proposers``; ``SpeculativeDecoding`` (``extension``) is the runner extension that
asks the configured proposer for drafts after every step. The scheduler feeds the drafts in
lookahead slots and rolls back the rejected ones; the sampler's ``verify`` accepts them.
"""

from vllm_core.spec_decode.proposer import Proposer

__all__ = ["Proposer"]
