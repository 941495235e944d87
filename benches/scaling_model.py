#!/usr/bin/env python3
"""A model of data-parallel training's scaling to N machines, from one machine's measurements.

A step of `mtrec train --distributed` computes (forward, backward, optimizer) and then
exchanges, without overlap: the ranks wait for the slowest exchange before the update.
Per step and rank, with a per-rank batch of b rows:
  compute   t_c = b / R, with R one machine's measured samples/s;
  dense     2 (N-1)/N * D bytes sent (reduce-scatter, then all-gather of the sums), D the dense
            gradients' bytes (independent of b);
  embedding every rank receives every other rank's touched rows: (N-1) * S(b) bytes, S(b) the
            bytes of one rank's touched rows (ids and values) at b rows;
  latency   about 8 collectives per step, each ~log2(N) message latencies.
  t_x = (2 (N-1)/N D + (N-1) S(b)) / bandwidth + 8 log2(N) latency
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


def efficiency(rate, dense, touched, batch, machines, gbit):
    bandwidth = gbit * 1e9 / 8
    compute = batch / rate
    exchange = (2 * (machines - 1) / machines * dense + (machines - 1) * touched) / bandwidth
    exchange += COLLECTIVES_PER_STEP * math.log2(machines) * LATENCY_S
    return compute / (compute + exchange), compute, exchange


def main():
    print("| model | machines | per-rank batch | 10 Gbit/s | 25 Gbit/s | 100 Gbit/s |")
    print("| --- | --- | --- | --- | --- | --- |")
    for spec in sys.argv[1:]:
        name, rate, dense, touched, batch = spec.split(":")
        rate, dense, touched, batch = float(rate), float(dense), float(touched), int(batch)
        for machines in (8, 64):
            for scale in (1, 4):
                cells = []
                for gbit in (10, 25, 100):
                    e, _, _ = efficiency(rate, dense, touched * scale, batch * scale, machines, gbit)
                    cells.append(f"{e:.0%}")
                print(f"| {name} | {machines} | {batch * scale} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
