"""libgomp's barrier wait, set before _kernels loads libgomp (it reads it only then).

OpenMP threads wait at every barrier of a forward (about 10 per layer). libgomp spins
300 000 times before it sleeps: right on idle cores, but when other programs hold them,
a descheduled thread makes the others spin away whole time slices. TinyLlama q4 decode
on 2 cores beside 4 busy processes: 2.8 tok/s by default, 8.3 with 10 000 spins, 8.0
with OMP_WAIT_POLICY=passive, which costs 20-50 % on idle cores, where 10 000 spins
cost nothing measurable (bench/README.md). A user's own setting wins.
"""
import os

SPIN_COUNT = "10000"

if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    os.environ["GOMP_SPINCOUNT"] = SPIN_COUNT
