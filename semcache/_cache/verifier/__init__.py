"""The hit verifier: a second decision after the nearest-neighbour search.

The search finds the cached prompt nearest to a new one; the verifier judges
whether that prompt asks for the same answer.  It scores the candidate with a
small gradient-boosted tree ensemble over features of the pair
(:mod:`.features`): the cosine, how the two prompts' contextual word pieces
align (from the same forward pass that embeds the query, and the cached
prompt's compressed word-piece vectors kept with its entry), and the hit
guard's lexical signals (:mod:`.lexical`) as features rather than vetoes.
The trained parameters ship in ``verifier.npz`` (:mod:`.model`); the script that
trains them is ``training/verifier/train.py`` in the source checkout.
"""
