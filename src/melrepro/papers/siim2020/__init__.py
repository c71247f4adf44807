"""siim2020: a patient-aware small dataset, ResNet18 + metadata, sex and brightness experts.

Paper 002 (SIIM-ISIC 2020 melanoma classification under a small compute budget), read with the
author's public code (GitHub ``phil-mira/AMLSII_24-25``); the notes are in
``shared/specs/siim2020.md``. Modules in the order of the flow, with the path-level functions
called by ``workflow/rules/siim2020.smk``:

0. :mod:`~melrepro.papers.siim2020.names`: datasets, models, protocols and table01 row labels.
1. :mod:`~melrepro.papers.siim2020.images`, :func:`prepare_images` (per cache shard): the
   256x256 image (cache ``sq256``) after one JPEG quality-60 round trip (the paper's
   "downsampled to 60 %" is the JPEG quality in the author's code), and its brightness (mean over
   pixels and channels, 0-255) and mean colour; :func:`augment_copy`, the seeded augmented copies.
2. :mod:`~melrepro.papers.siim2020.datasets`, :func:`write_datasets` (per protocol): cleaning
   (duplicates, missing metadata), the split (``patient``: the shared ``patient_85_15`` split;
   ``author_code``: the author's cut of 20 % of the raw rows from the end of the cleaned rows
   sorted by patient id, at a patient boundary; 300 validation patients for Small), the datasets
   All / Small / Small 3aug / Small 5aug, the one evaluation set of the four (All validation less
   every training row; the evaluation patients with training images counted), and every count
   of table02.
3. :mod:`~melrepro.papers.siim2020.evaluate`: the threshold rule of §6, the metrics at a
   threshold, and :func:`write_submission`.
4. :mod:`~melrepro.papers.siim2020.train`, :func:`train_model_on` (per protocol, model and
   dataset): the base model or an expert model (:mod:`melrepro.methods.metadata_models`) trained
   with the shared training core; the threshold rule of §6 on the evaluation set; predictions for
   the test set.
5. :mod:`~melrepro.papers.siim2020.tables` and :mod:`~melrepro.papers.siim2020.figures`.

Artifact index (id: module.function that writes it):

    table01          tables.tabulate_table01 (metrics.json of every training)
    table02          tables.tabulate_table02 (counts.json of each protocol)
    fig02            figures.plot_colour_swatches
    fig03, fig04     figures.plot_extremes (melanomas, benign)
    fig08, fig14, fig15  figures.plot_loss_panels (base, sex, brightness model)
    fig09, fig16, fig17  figures.plot_roc (base, brightness, sex model)
    fig10            figures.plot_confusions
    fig11, fig12     figures.plot_examples (true positives, false negatives of Base Small)
    fig13            figures.plot_age_violins
    submission       evaluate.write_submission (Base Small, Kaggle format)

Figures 1, 5, 6 and 7 of the paper are drawings (ResNet block, CNN, perceptron, architecture).

Importing the package imports nothing (no torch): import the module that holds a function, e.g.
``from melrepro.papers.siim2020.tables import tabulate_table01``.
"""
