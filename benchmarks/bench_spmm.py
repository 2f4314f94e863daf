"""Propagation cost: 3-layer LightGCN forward + backward over Â with the stock CSR autograd against the
symmetric custom backward (Âᵀ g = Â g), interleaved in one run so that machine noise hits both alike.

    .venv/bin/python benchmarks/bench_spmm.py --datasets ml-1m gowalla --repeats 5
"""
from __future__ import annotations

import argparse
import time

import torch

from recunlearn.bench.environment import machine_line
from recunlearn.data.graph import build_graph, spmm
from recunlearn.data.registry import load_dataset


def three_layers(adj: torch.Tensor, x: torch.Tensor, product) -> torch.Tensor:
    out = [x]
    for _ in range(3):
        out.append(product(adj, out[-1]))
    return torch.stack(out).mean(0)


def timed(adj, x, product) -> tuple[float, float]:
    start = time.perf_counter()
    with torch.no_grad():
        three_layers(adj, x, product)
    forward = time.perf_counter() - start
    start = time.perf_counter()
    three_layers(adj, x, product).square().sum().backward()
    return forward, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["ml-1m", "gowalla"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print("machine:", machine_line())
    products = {"stock CSR autograd": lambda a, x: a @ x, "symmetric backward": spmm}
    for name in args.datasets:
        graph = build_graph(load_dataset(name).train)
        x = torch.randn(graph.n_nodes, args.dim, requires_grad=True)
        totals = {k: [0.0, 0.0] for k in products}
        for label, product in products.items():   # warm-up
            timed(graph.adj, x, product)
        for _ in range(args.repeats):
            for label, product in products.items():
                f, fb = timed(graph.adj, x, product)
                totals[label][0] += f / args.repeats
                totals[label][1] += fb / args.repeats
        stock, sym = totals["stock CSR autograd"], totals["symmetric backward"]
        print(f"{name}: N={graph.n_nodes} nnz={graph.nnz} d={args.dim}, 3 layers, mean of {args.repeats}")
        for label, (f, fb) in totals.items():
            print(f"  {label:20s} forward {f * 1000:7.1f} ms   forward+backward {fb * 1000:7.1f} ms")
        print(f"  forward+backward speed-up of the symmetric backward: {stock[1] / sym[1]:.2f}x")


if __name__ == "__main__":
    main()
