"""Replay a decode step from a CUDA graph: static input buffers in, static outputs out, one ``replay()``.

At DECO's widths one token through an FFN layer costs a few µs of GPU work but 60–80 µs of Python and launch
overhead (h200_anchors.md, "MoE decode at batch 1"); a captured graph removes the overhead, which makes it the
fair setting to compare a dense SwiGLU with the fused DECO kernel — and the way to serve decode.

    step = GraphedStep(layer, torch.randn(1, h, device="cuda", dtype=torch.bfloat16))
    y = step(x)            # copies x into the static input, replays, returns the static output (do not keep it
                           # across calls: the next replay overwrites it — clone if needed)

Works for any callable whose inputs have fixed shapes (a layer, or a whole model's one-token step with a static
cache): tensors in ``example_inputs`` become the static buffers; non-tensor arguments are baked in.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


class GraphedStep:
    """Capture ``fn(*example_inputs)`` once in a ``torch.cuda.CUDAGraph``; ``__call__`` copies new inputs in and
    replays. ``warmup`` eager calls run first on a side stream (lazy init, Triton compilation, cuBLAS handles)."""

    def __init__(self, fn: Callable, *example_inputs, warmup: int = 3):
        tensors = [a for a in example_inputs if isinstance(a, torch.Tensor)]
        if not tensors or any(t.device.type != "cuda" for t in tensors):
            raise ValueError("GraphedStep needs CUDA tensors among example_inputs (the graph is captured on CUDA)")
        self.fn = fn
        self.static_inputs = [a.clone() if isinstance(a, torch.Tensor) else a for a in example_inputs]
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream), torch.inference_mode():
            for _ in range(warmup):
                fn(*self.static_inputs)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph), torch.inference_mode():
            self.static_output = fn(*self.static_inputs)

    def __call__(self, *inputs):
        if len(inputs) != len(self.static_inputs):
            raise ValueError(f"GraphedStep was captured with {len(self.static_inputs)} inputs, got {len(inputs)}")
        for buf, new in zip(self.static_inputs, inputs):
            if isinstance(buf, torch.Tensor):
                if new.shape != buf.shape:
                    raise ValueError(f"GraphedStep input shape {tuple(new.shape)} != captured {tuple(buf.shape)}")
                if new.data_ptr() != buf.data_ptr():
                    buf.copy_(new)
        self.graph.replay()
        return self.static_output

    def replay(self):
        """Replay without copying inputs (write into ``static_inputs`` yourself)."""
        self.graph.replay()
        return self.static_output
