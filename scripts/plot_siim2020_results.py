"""Rules plot_siim2020_{loss,roc,confusion}: loss panels, ROC curves, confusion matrices."""

from melrepro.papers.siim2020.figures import plot_confusions, plot_loss_panels, plot_roc
from melrepro.papers.siim2020.names import DATASET_LABELS, DATASETS, MODEL_LABELS
from melrepro.report.logs import log_to_file

log_to_file(snakemake.log[0])
model = snakemake.params.model
labels = [f"{MODEL_LABELS[model]} {DATASET_LABELS[d]}" for d in DATASETS]
if snakemake.rule == "plot_siim2020_loss":
    plot_loss_panels(
        list(snakemake.input.histories),
        labels,
        snakemake.output.figure,
        title=f"Training and validation loss, {MODEL_LABELS[model].lower()} model",
    )
elif snakemake.rule == "plot_siim2020_roc":
    plot_roc(
        list(snakemake.input.predictions),
        labels,
        snakemake.output.figure,
        title=f"ROC on the evaluation set, {MODEL_LABELS[model].lower()} model",
    )
else:
    plot_confusions(
        list(snakemake.input.predictions),
        list(snakemake.input.metrics),
        labels,
        snakemake.output.figure,
    )
