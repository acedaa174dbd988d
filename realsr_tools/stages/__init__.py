"""Stages: orchestration only. Each reads its source (a manifest or a folder), runs its items, writes outputs and
its manifest through :mod:`realsr_tools.pipeline`; the algorithms live in the packages beside this one."""
