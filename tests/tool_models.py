"""Tiny random models with the real chat templates of the tool-calling families
(tests/data/chat_templates): the tools and messages the tool-call tests share."""
import json
import os

import tiny_models
import tiny_tokenizers

TEMPLATES = os.path.join(os.path.dirname(__file__), "data", "chat_templates")
FAMILIES = {  # name: (template file, format, eos token)
    "qwen2.5": ("Qwen-Qwen2.5-7B-Instruct.jinja", "hermes", "<|im_end|>"),
    "hermes3": ("NousResearch-Hermes-3-Llama-3.1-8B-tool_use.jinja", "hermes", "<|im_end|>"),
    "llama3.1": ("meta-llama-Llama-3.1-8B-Instruct.jinja", "llama3", "<|eot_id|>"),
    "mistral-nemo": ("mistralai-Mistral-Nemo-Instruct-2407.jinja", "mistral", "</s>"),
    "qwen3": ("Qwen-Qwen3-0.6B.jinja", "hermes", "<|im_end|>"),
    "llama3.2": ("meta-llama-Llama-3.2-3B-Instruct.jinja", "llama3", "<|eot_id|>"),
    "mistral-small-3.2": ("Mistral-Small-3.2-24B-Instruct-2506.jinja", "mistral-args", "</s>"),
    "granite-3.3": ("ibm-granite-granite-3.3-2B-Instruct.jinja", "granite", "<|end_of_text|>"),
}
MARKERS = ["<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>"]  # Qwen: added, not special
SPECIAL = ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|python_tag|>", "[INST]", "[/INST]",
           "[TOOL_CALLS]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]", "[TOOL_RESULTS]", "[/TOOL_RESULTS]",
           "[ARGS]", "[CALL_ID]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]", "<|start_of_role|>", "<|end_of_role|>",
           "<|end_of_text|>", "<|tool_call|>"]
TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather", "description": "Weather at a place",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string", "description": "City name", "maxLength": 12},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"], "additionalProperties": False}}},
    {"type": "function", "function": {
        "name": "add", "description": "Add two integers",
        "parameters": {"type": "object", "properties": {
            "a": {"type": "integer", "minimum": -1000, "maximum": 1000},
            "b": {"type": "integer", "minimum": -1000, "maximum": 1000}},
            "required": ["a", "b"], "additionalProperties": False}}},
]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
MESSAGES = [{"role": "system", "content": "You can call tools."}, {"role": "user", "content": "Weather in Oslo?"}]
SETTINGS = [dict(temperature=0.0), dict(temperature=0.7), dict(temperature=1.5, top_k=0, top_p=1.0, min_p=0.0),
            dict(temperature=1.0, top_k=5, repeat_penalty=1.5), dict(temperature=1.0, top_p=0.6, presence_penalty=1.0)]




def build(name: str, folder: str) -> str:
    """A tiny random Llama in `folder` with family `name`'s template and markers."""
    template, _, eos = FAMILIES[name]
    tiny_models.build("llama-mha", folder, vocab_size=384, max_position_embeddings=2048)
    tok = tiny_tokenizers.byte_level_bpe()
    tok.add_tokens(MARKERS)
    tok.add_special_tokens(SPECIAL)
    tok.save(os.path.join(folder, "tokenizer.json"))
    with open(os.path.join(TEMPLATES, template)) as f:
        source = f.read()
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": "<s>", "eos_token": eos, "chat_template": source,
                   "tokenizer_class": "PreTrainedTokenizerFast"}, f)
    return folder
