"""One module per pipeline stage; `dvc.yaml` reads like their table of contents."""

STAGES = ("collect", "sample", "train", "prior", "generate", "evaluate", "tune")
