"""Gradient-ascent activation maximization beside data sampling (docs/ASCENT.md).

objective.py  a unit's activation at the last input position as a differentiable function of the
              input embeddings (the forward stops after the unit's module)
relax.py      continuous relaxation: a softmax over the vocabulary per position, Adam
gcg.py        discrete search: gradient-ranked token swaps, evaluated exactly (greedy coordinate gradient)
runs.py       several seeds, the exact value of the decoded tokens, agreement between seeds and with data
"""
