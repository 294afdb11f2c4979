"""Training with the published recipes on PyTorch Lightning: configs, objectives, the module, runs.

- :mod:`~centrum.training.config`: typed experiment configs (YAML, dotted overrides);
- :mod:`~centrum.training.objectives`: the CTL objective and the metric-learning objective (± Symm);
- :mod:`~centrum.training.module`: the Lightning module (Adam with warm-up and step decay, center-loss SGD);
- :mod:`~centrum.training.run`: run folders, the trainer, repeated seeds (``train``, ``train_runs``);
- :mod:`~centrum.training.callbacks`: evaluation during training, the checkpoint writer, the epoch lines;
- :mod:`~centrum.training.resume`: the checks that make a resume honest, metrics rows across interruptions;
- :mod:`~centrum.training.preflight`: device, data root and batch checks made before a run folder exists;
- :mod:`~centrum.training.results`: ``RunResult``, the mean over seeds, the printed results table;
- :mod:`~centrum.training.checkpoint`: checkpoints written atomically inside the run folder, and a trained model
  back with its typed config (embedding itself is :mod:`centrum.inference`, which needs no Lightning).
"""

from centrum.training.checkpoint import TrainedModel, load_trained_model
from centrum.training.config import (
    CTLObjectiveConfig,
    DataConfig,
    EvaluationConfig,
    ExperimentConfig,
    MetricObjectiveConfig,
    ModelConfig,
    OptimizerConfig,
    TrainerConfig,
    apply_overrides,
    config_from_dict,
    load_config,
)
from centrum.training.datamodule import RetrievalDataModule
from centrum.training.module import RetrievalModule, build_objective
from centrum.training.objectives import CTLObjective, MetricObjective
from centrum.training.run import RunResult, summarize_runs, train, train_runs
from centrum.training.schedule import warmup_multistep_factor

__all__ = [
    "CTLObjective",
    "CTLObjectiveConfig",
    "DataConfig",
    "EvaluationConfig",
    "ExperimentConfig",
    "MetricObjective",
    "MetricObjectiveConfig",
    "ModelConfig",
    "OptimizerConfig",
    "RetrievalDataModule",
    "RetrievalModule",
    "RunResult",
    "TrainedModel",
    "TrainerConfig",
    "apply_overrides",
    "build_objective",
    "config_from_dict",
    "load_config",
    "load_trained_model",
    "summarize_runs",
    "train",
    "train_runs",
    "warmup_multistep_factor",
]
