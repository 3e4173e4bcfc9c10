"""Simulated RAPID job folders: the default data source of the demo, tests and benchmarks.

Jobs observe a few sky *fields*, each at several epochs with the same static sky: job k
(0-based) looks at field ``k % fields`` at epoch ``k // fields``. Every field's sky and every
job's epoch draw from their own child of the master seed, so job k is byte-identical whatever
the number of jobs or workers.

>>> from croissant_cutouts.simulate import simulate_jobs
>>> summaries = simulate_jobs("jobs", n_jobs=4, size=1024, seed=0)  # doctest: +SKIP

- :mod:`.jobs`: one job or many (:func:`simulate_jobs`).
- :mod:`.scene`: the sky, the epochs and the images (science, reference, difference, score).
- :mod:`.zogy`: the ZOGY proper-image subtraction.
- :mod:`.catalogs`: the finder and PSF-fit catalogs, as RAPID writes them.
- :mod:`.layouts`: the folder layouts written (RAPID's variants, the seed's).
- :mod:`.gallery`: a picture of a job.
"""

from croissant_cutouts.tasks.infra.exports import lazy_exports

# Names resolve on first use (see infra.exports): importing this package imports none of
# its modules.
__all__, __getattr__, __dir__ = lazy_exports(__name__, [
    "jobs",
])
