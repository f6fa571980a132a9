"""``python -m nas.sweep``: Optuna studies over the search's trade-off, and a black-box baseline.

Draw the latency-accuracy curve by sweeping eta, compare the gradient search with a black-box
one, on one machine or many::

    python -m nas.sweep --eta 0 0.25 0.5 1 2 --preset tiny          # a grid over eta
    python -m nas.sweep --eta-range 0 2 --n-trials 12 --sampler tpe  # sampled eta
    python -m nas.sweep --eta 0 0.5 1 --retrain-epochs 5 --beta1 0.5 0.75   # + short retrain
    python -m nas.sweep --mode nsga2 --n-trials 24 --proxy-epochs 2    # NSGA-II over genotypes
    python -m nas.sweep plot --studies eta-tiny nsga2-tiny             # both fronts, one figure
    python -m nas.sweep report --study eta-tiny                        # the Pareto table again

**DARTS mode** (default): one trial = one latency-penalised search (:func:`nas.search.run_search`)
at the trial's eta, optionally followed by a short retrain of the derived genotype
(:func:`nas.train.run_train`, ``--loss crmef`` with the trial's beta1/beta2). Eta values
given with ``--eta`` (and ``--beta1``/``--beta2`` lists) form a grid
(:class:`optuna.samplers.GridSampler`); ``--eta-range LO HI`` samples eta with TPE
(``--sampler tpe``) or NSGA-II.

**NSGA-II mode** (``--mode nsga2``): the black-box baseline. A trial samples a genotype
directly from the same search space (one categorical parameter per slot,
:class:`optuna.samplers.NSGAIISampler`) and scores it by a short proxy training
(``run_train`` for ``--proxy-epochs`` epochs, crmef loss) and its latency predicted by this
device's table (measured when there is no table).

Objectives (both modes, ``directions=["maximize", "minimize"]``):

1. validation quality: PSNR (dB) where the data has ground truth, MEF-SSIM where it has
   not (real bracketed sequences; ``quality_metric`` says which), as the engine scores
   validation: the retrain's (or proxy training's) best; without a retrain, the derived
   network *with the weights it inherits from the supernet*, evaluated on the search's
   validation batches (the supernet's own score is kept as ``supernet_quality``);
2. latency (ms): DARTS mode: the derived network **measured** on this device (the profiler's
   :func:`~nas.latency.profiler.time_fn` harness, batch 1, the search's latency input size,
   median of ``--latency-reps`` calls); NSGA-II mode: table-predicted. Both modes store the
   measured and predicted latency as user attributes, and the plot uses the measured one for
   both fronts.

Each trial stores ``run_dir`` (the run folder), ``genotype``, ``predicted_ms``,
``measured_ms``, ``wall_s`` (wall-clock of the trial) and more in its user attributes.

**Storage, workers, resume.** Studies live in an RDB (:class:`optuna.storages.RDBStorage`):
by default the SQLite file ``results/sweeps/<study>.db`` (embedded, one machine); any
SQLAlchemy URL (``postgresql://...``, ``mysql+pymysql://...``) for many machines. Workers
record a heartbeat (``--heartbeat`` seconds); a trial whose worker died is marked FAILED once
its heartbeat is older than ``--grace`` seconds (:func:`optuna.storages.fail_stale_trials`)
and re-queued with the same parameters and run folder, and the next worker *resumes* that
run from its last checkpoint. Re-running the same command continues the study: complete
grid points are skipped, failed ones re-queued. ``--n-workers K`` starts K local worker
processes; workers started separately (``python -m nas.sweep --study NAME --storage URL``,
on any machine) join the same study, and read its settings from the study itself. With
SQLite, workers of one machine serialise the step that picks the next trial with a file
lock next to the database, so no grid point runs twice.

Layout: :mod:`~nas.sweep.config` (what a study is), :mod:`~nas.sweep.study` (storage, lock,
sampler, grid bookkeeping), :mod:`~nas.sweep.trials` (a DARTS trial), :mod:`~nas.sweep.nsga2`
(a black-box trial), :mod:`~nas.sweep.worker` (objective, worker loop, processes),
:mod:`~nas.sweep.report` (tables, fronts, figure), :mod:`~nas.sweep.cli` (the command line).

Outputs: ``results/sweeps/<study>.csv`` (every complete trial, ``pareto`` flag),
``<study>.md`` (the Pareto table), ``<study>.png`` (the front, plus ``--compare`` studies).
"""

from nas.sweep.cli import build_parser, main
from nas.sweep.config import SweepConfig, WorkerOptions
from nas.sweep.nsga2 import evaluated
from nas.sweep.report import draw_fronts, front_data, front_rows, remeasure, trials_frame
from nas.sweep.study import make_storage, open_study
from nas.sweep.worker import run_worker

__all__ = [
    "SweepConfig",
    "WorkerOptions",
    "build_parser",
    "draw_fronts",
    "evaluated",
    "front_data",
    "front_rows",
    "main",
    "make_storage",
    "open_study",
    "remeasure",
    "run_worker",
    "trials_frame",
]
