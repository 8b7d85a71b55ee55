from comfy_service.tracking import ComfyErrorLines

# As a real ComfyUI prints an execution error (see the captures), between ordinary lines.
LINES = [
    ("got prompt", False),
    ("!!! Exception during processing !!! CUDA out of memory. Tried to allocate 2.50 GiB.", True),
    ("Traceback (most recent call last):", True),
    ('  File "/app/execution.py", line 496, in execute', True),
    ("    output_data = get_output_data(obj, input_data_all)", True),
    ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.50 GiB.", True),
    ("Prompt executed in 0.31 seconds", False),
    ("  indented, but no traceback is open", False),
    ("Requested to load SDXL", False),
]


def test_comfyui_error_lines_are_told_from_the_rest() -> None:
    lines = ComfyErrorLines()
    assert [(line, lines.is_error(line)) for line, _ in LINES] == LINES
