"""Files cnnlab writes and reads: safetensors weights with JSON metadata, atomic writes."""
