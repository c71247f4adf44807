"""effnet_ham: EfficientNet-B0 on ISIC 2018 task 3 (HAM10000), malignant vs benign.

Path-level functions called by the rules of ``workflow/rules/effnet_ham.smk``: train one
variant of the recipe (Baseline 1, Baseline 2 and the three experiments of §4.3 are
configurations of the same function), build table01, and draw fig01-fig03, fig05 and fig06.

Modules, in the order of the flow (each imports only those before it):

    datasets    manifest + lesion split + image cache -> labelled, preprocessed task-3 images
    evaluate    probabilities -> metrics at both thresholds; Grad-CAM of a trained variant
    train       train_variant: one variant trained, evaluated, its outputs written
    tables      table01
    figures     fig01-fig03, fig05, fig06

Nothing is imported here: table and figure jobs load only what they use, without torch,
torchvision or pytorch-grad-cam (imported inside the functions that train or explain).

References
----------
Silva, P., Diz, P. Skin Cancer Detection Using Convolutional Neural Networks (FCUL, 2025),
https://github.com/PedroDiz/AP-2025.

Artifact index (id: function that writes it):

    table01          tables.tabulate_results (metrics of every train.train_variant run)
    fig01            figures.plot_class_distribution
    fig02            figures.plot_loss_curves
    fig03            figures.plot_confusion
    fig04            the rule graph: melrepro.report.rulegraph via workflow/rules/report.smk
    fig05            figures.plot_gradcam_examples (maps of evaluate.compute_gradcam)
    fig06            figures.plot_gradcam_outside (maps of evaluate.compute_gradcam)
"""
