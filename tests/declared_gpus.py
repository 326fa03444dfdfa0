"""The GPUs the test session's Ray head declares (tests/workers/conftest.py).

This machine need not have any: Ray places GPU jobs on declared GPUs as on real
ones and sets CUDA_VISIBLE_DEVICES, and torch, finding no CUDA device, trains on
the CPU. That is how the dispatcher's GPU scheduling is tested end to end.
"""

GPUS = 2
