"""A /metrics page as a vLLM V1 server with two data-parallel engines serves it."""

from __future__ import annotations

MODEL = "meta-llama/Llama-3.1-8B-Instruct"

_CACHE_INFO = (
    'block_size="16",cache_dtype="auto",enable_prefix_caching="True",engine="0",'
    'gpu_memory_utilization="0.9",prefix_caching_hash_algo="builtin"'
)
_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0)


def _ttft_histogram(engine: str, counts: tuple[int, ...], total: float) -> str:
    labels = f'engine="{engine}",model_name="{MODEL}"'
    lines = []
    running = 0
    for le, n in zip(_BUCKETS, counts, strict=True):
        running += n
        lines.append(f'vllm:time_to_first_token_seconds_bucket{{{labels},le="{le}"}} {running}.0')
    lines.append(f'vllm:time_to_first_token_seconds_bucket{{{labels},le="+Inf"}} {running}.0')
    lines.append(f"vllm:time_to_first_token_seconds_count{{{labels}}} {running}.0")
    lines.append(f"vllm:time_to_first_token_seconds_sum{{{labels}}} {total}")
    return "\n".join(lines)


def metrics_page(
    *,
    waiting: tuple[float, float] = (4.0, 1.0),
    running: tuple[float, float] = (3.0, 2.0),
    kv: tuple[float, float] = (0.42, 0.17),
    ttft_sum: tuple[float, float] = (10.5, 4.5),
    ttft_counts: tuple[tuple[int, ...], tuple[int, ...]] = (
        (0, 0, 5, 10, 20, 10, 5, 5, 3, 2, 0, 0, 0, 0),
        (0, 0, 2, 3, 5, 5, 0, 0, 0, 0, 0, 0, 0, 0),
    ),
    kv_name: str = "vllm:kv_cache_usage_perc",
    itl_sum: tuple[float, float] = (31.5, 9.0),
    itl_count: tuple[float, float] = (900.0, 300.0),
    itl_name: str = "vllm:inter_token_latency_seconds",
) -> str:
    """Engine 0 and 1; the TTFT histograms count 60 and 15 requests by default, the
    inter-token histograms 900 and 300 tokens."""
    m = f'model_name="{MODEL}"'
    return f"""\
# HELP python_gc_objects_collected_total Objects collected during gc
# TYPE python_gc_objects_collected_total counter
python_gc_objects_collected_total{{generation="0"}} 12345.0
python_gc_objects_collected_total{{generation="1"}} 678.0
# HELP process_resident_memory_bytes Resident memory size in bytes.
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 1.234567168e+09
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{{engine="0",{m}}} {running[0]}
vllm:num_requests_running{{engine="1",{m}}} {running[1]}
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{{engine="0",{m}}} {waiting[0]}
vllm:num_requests_waiting{{engine="1",{m}}} {waiting[1]}
# HELP {kv_name} KV-cache usage. 1 means 100 percent usage.
# TYPE {kv_name} gauge
{kv_name}{{engine="0",{m}}} {kv[0]}
{kv_name}{{engine="1",{m}}} {kv[1]}
# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig
# TYPE vllm:cache_config_info gauge
vllm:cache_config_info{{{_CACHE_INFO}}} 1.0
# HELP vllm:num_preemptions_total Cumulative number of preemption from the engine.
# TYPE vllm:num_preemptions_total counter
vllm:num_preemptions_total{{engine="0",{m}}} 0.0
vllm:num_preemptions_total{{engine="1",{m}}} 2.0
# HELP vllm:prompt_tokens_total Number of prefill tokens processed.
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{{engine="0",{m}}} 48213.0
vllm:prompt_tokens_total{{engine="1",{m}}} 12007.0
# HELP vllm:request_success_total Count of successfully processed requests.
# TYPE vllm:request_success_total counter
vllm:request_success_total{{engine="0",finished_reason="stop",{m}}} 55.0
vllm:request_success_total{{engine="0",finished_reason="length",{m}}} 3.0
vllm:request_success_total{{engine="1",finished_reason="stop",{m}}} 14.0
# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE vllm:time_to_first_token_seconds histogram
{_ttft_histogram("0", ttft_counts[0], ttft_sum[0])}
{_ttft_histogram("1", ttft_counts[1], ttft_sum[1])}
# HELP vllm:e2e_request_latency_seconds Histogram of e2e request latency in seconds.
# TYPE vllm:e2e_request_latency_seconds histogram
vllm:e2e_request_latency_seconds_bucket{{engine="0",le="1.0",{m}}} 40.0
vllm:e2e_request_latency_seconds_bucket{{engine="0",le="+Inf",{m}}} 58.0
vllm:e2e_request_latency_seconds_count{{engine="0",{m}}} 58.0
vllm:e2e_request_latency_seconds_sum{{engine="0",{m}}} 61.25
# HELP {itl_name} Histogram of inter-token latency in seconds.
# TYPE {itl_name} histogram
{itl_name}_bucket{{engine="0",le="0.05",{m}}} {itl_count[0]}
{itl_name}_bucket{{engine="0",le="+Inf",{m}}} {itl_count[0]}
{itl_name}_count{{engine="0",{m}}} {itl_count[0]}
{itl_name}_sum{{engine="0",{m}}} {itl_sum[0]}
{itl_name}_bucket{{engine="1",le="0.05",{m}}} {itl_count[1]}
{itl_name}_bucket{{engine="1",le="+Inf",{m}}} {itl_count[1]}
{itl_name}_count{{engine="1",{m}}} {itl_count[1]}
{itl_name}_sum{{engine="1",{m}}} {itl_sum[1]}
"""
