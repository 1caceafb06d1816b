"""The model, its inputs and its files: sources (twins, hubs, local folders), conversion, the labelled corpus,
tokenization, the service's shape buckets and the exported artifacts (file names, manifest)."""
