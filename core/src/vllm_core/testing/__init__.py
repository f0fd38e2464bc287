"""The conformance kit: what a platform or attention backend runs to prove it agrees with the
reference platform.

- ``vllm_core.testing.conformance``: ``make_attention_batch`` (random paged KV cache plus
  ``AttentionMetadata`` built by hand), the pytest classes ``AttentionConformance``,
  ``OpsConformance`` and ``EndToEndConformance``, and the end-to-end helpers
  ``make_tiny_llama`` / ``greedy_token_ids`` / ``assert_greedy_matches_reference``.
- ``vllm_core.testing.plugin``: a pytest plugin (entry point ``vllm_core_conformance``) with the
  option ``--vllm-platform NAME`` and the fixtures ``platform_under_test`` and
  ``conformance_platform``.

A backend's test module subclasses the classes and names its platform::

    import pytest
    from vllm_core.testing.conformance import AttentionConformance, OpsConformance

    class TestAcmeAttention(AttentionConformance):
        @pytest.fixture
        def conformance_platform(self):
            from vllm_core.platforms import resolve_platform
            return resolve_platform("acme")

    class TestAcmeOps(OpsConformance):
        ...  # without the fixture: ``pytest --vllm-platform acme`` picks the platform

Nothing here is imported by the engine; importing ``conformance`` needs pytest.
"""
