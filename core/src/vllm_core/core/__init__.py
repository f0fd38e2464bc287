"""Scheduling and KV-cache block management."""
