"""seglab's benchmarks: throughput against the article's naive reference and HF transformers, time to accuracy."""
