#!/usr/bin/env python3
"""A model of data-parallel training's scaling to N machines, from one machine's measurements.

A step of `mtrec train --distributed` computes (forward, backward, optimizer) and then
exchanges, without overlap: the ranks wait for the slowest exchange before the update.
Per step and rank, with a per-rank batch of b rows:
  compute   t_c = b / R, with R one machine's measured samples/s;
  dense     2 (N-1)/N * D bytes sent (reduce-scatter, then all-gather of the sums), D the dense
            gradients' bytes (independent of b);
  embedding replicated tables: every rank receives every other rank's touched rows,
            (N-1) * S(b) bytes, S(b) the bytes of one rank's touched rows (ids and values) at b
            rows; row-sharded tables: a rank fetches the rows it looks up from their owners and
            sends their gradients back, about 2 (N-1)/N * S(b) bytes, whatever N;
  latency   about 8 collectives per step (12 with sharded tables), each ~log2(N) message
            latencies.
  t_x = (2 (N-1)/N D + embedding) / bandwidth + collectives log2(N) latency
  efficiency = t_c / (t_c + t_x), the share of N machines' compute that a step uses.
S(b) grows more slowly than b (rows repeat within a batch); the model takes S proportional to b
from the measured S at the measured batch, which overstates it at larger batches.

Usage: scaling_model.py NAME:R:D:S:B [...] where R is one machine's samples/s, D the dense
gradient bytes, S one rank's touched-row bytes per step at a per-rank batch of B rows (the
measured bytes per step minus 1.5 D at two ranks). Prints the efficiency for 8 and 64 machines
at 10, 25 and 100 Gbit/s and per-rank batches of B and 4B, with 20 us latency.
"""

import math
import sys

LATENCY_S = 20e-6
COLLECTIVES_PER_STEP = 8


def efficiency(rate, dense, touched, batch, machines, gbit, sharded):
    bandwidth = gbit * 1e9 / 8
    compute = batch / rate
    share = (machines - 1) / machines
    embedding = 2 * share * touched if sharded else (machines - 1) * touched
    exchange = (2 * share * dense + embedding) / bandwidth
    collectives = COLLECTIVES_PER_STEP + (4 if sharded else 0)
    exchange += collectives * math.log2(machines) * LATENCY_S
    return compute / (compute + exchange)


def main():
    print("| model | tables | machines | per-rank batch | 10 Gbit/s | 25 Gbit/s | 100 Gbit/s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for spec in sys.argv[1:]:
        name, rate, dense, touched, batch = spec.split(":")
        rate, dense, touched, batch = float(rate), float(dense), float(touched), int(batch)
        for sharded in (False, True):
            for machines in (8, 64):
                for scale in (1, 4):
                    cells = [
                        f"{efficiency(rate, dense, touched * scale, batch * scale, machines, gbit, sharded):.0%}"
                        for gbit in (10, 25, 100)
                    ]
                    tables = "sharded" if sharded else "replicated"
                    print(f"| {name} | {tables} | {machines} | {batch * scale} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
