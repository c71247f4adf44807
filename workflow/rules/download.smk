# The official archives (data.source: isic; the rehearsal takes its CSVs here): download or link every official file of DESIGN.md
# section 1, check it against the SHA-256 lock (config/archive_checksums.tsv) and write
# resources/archives/<dataset>/verified.json, which ingest depends on. Included by data.smk.

# Paths and the `file` wildcard regex are defined in common.smk (archive_inputs,
# archive_files, official_file_regex, FILE_DATASETS, MELANOMA_FOLDER).

# Outside every rule's output, so that Snakemake's clean-up of a failed job leaves them alone: files
# that failed a check (kept for the user to inspect) and isic-cli downloads that passed (a retry
# reuses them instead of fetching again). See docs/data_contract.md, "What is trusted".
REJECTED = "resources/rejected"
DOWNLOAD_CACHE = "resources/download_cache"


if config["data"].get("archive_dir"):

    # Cheap (a symlink and a hash): run on the submitting host.
    localrules:
        link_archive_file,

    rule link_archive_file:
        output:
            archive=f"{ARCHIVES}/{{dataset}}/{{file}}",
        log:
            "logs/link_archive_file/{dataset}/{file}.log",
        benchmark:
            "benchmarks/results/link_archive_file/{dataset}/{file}.tsv"
        wildcard_constraints:
            dataset="|".join(FILE_DATASETS),
            file=official_file_regex(),
        retries: 0
        conda:
            "../../envs/data.yaml"
        threads: 1
        resources:
            mem_mb=500,
            runtime=60,
        params:
            archive_dir=config["data"]["archive_dir"],
            checksums=config["data"]["checksums"],
            rejected_dir=REJECTED,
            chunk_mb=config["data"]["download"]["chunk_mb"],
        script:
            "../../scripts/link_archive_file.py"

else:

    # Cluster compute nodes often have no internet access: downloads run on the submitting host.
    localrules:
        download_archive_file,

    rule download_archive_file:
        output:
            archive=f"{ARCHIVES}/{{dataset}}/{{file}}",
        log:
            "logs/download_archive_file/{dataset}/{file}.log",
        benchmark:
            "benchmarks/results/download_archive_file/{dataset}/{file}.tsv"
        wildcard_constraints:
            dataset="|".join(FILE_DATASETS),
            file=official_file_regex(),
        # The function already retries over the mirrors and resumes; one more try from Snakemake
        # resumes the kept .part after anything else that went wrong.
        retries: 1
        conda:
            "../../envs/data.yaml"
        threads: 1
        resources:
            mem_mb=1000,
            runtime=600,
        params:
            # A function, so that Snakemake leaves the `{year}` in the addresses alone.
            hosts=lambda wildcards: config["data"].get("hosts"),
            checksums=config["data"]["checksums"],
            download=config["data"]["download"],
            rejected_dir=REJECTED,
        script:
            "../../scripts/download_archive_file.py"


if SOURCE == "isic":

    localrules:
        download_archive_melanomas,

    rule download_archive_melanomas:
        input:
            # The ids to fetch (config/README.md, "Pinned archive melanomas").
            pinned_ids=pinned_melanoma_ids()[0],
        output:
            images=directory(MELANOMA_FOLDER),
        log:
            f"logs/download_archive_melanomas/isic_archive_melanoma.log",
        benchmark:
            f"benchmarks/results/download_archive_melanomas/isic_archive_melanoma.tsv"
        retries: 1
        conda:
            "../../envs/data.yaml"
        threads: 1
        resources:
            mem_mb=1000,
            runtime=120,
        params:
            query=lambda wildcards: config["data"]["archive_melanomas"]["query"],
            limit=config["data"]["archive_melanomas"]["limit"],
            accept_unpinned=config["data"]["archive_melanomas"]["accept_unpinned"],
            archive_dir=config["data"].get("archive_dir"),
            checksums=config["data"]["checksums"],
            chunk_mb=config["data"]["download"]["chunk_mb"],
            cache_dir=DOWNLOAD_CACHE,
            rejected_dir=REJECTED,
        script:
            "../../scripts/download_archive_melanomas.py"


rule verify_archives:
    input:
        archives=lambda wc: archive_files(wc.dataset),
        rehearsal_lock=lambda wc: rehearsal_lock(wc.dataset),
    output:
        verified=f"{ARCHIVES}/{{dataset}}/verified.json",
    log:
        "logs/verify_archives/{dataset}.log",
    benchmark:
        "benchmarks/results/verify_archives/{dataset}.tsv"
    wildcard_constraints:
        dataset="|".join(DATASETS),
    retries: 0
    conda:
        "../../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=120,
    params:
        # The rehearsal's drawn files are checked against their own lock, never the official one.
        checksums=lambda wc: verify_lock(wc.dataset),
        chunk_mb=config["data"]["download"]["chunk_mb"],
        rejected_dir=REJECTED,
    script:
        "../../scripts/verify_archives.py"
