//! What the model reads: JSONL rows and the collator (`dataset`), the tokenizer, the prompt
//! templates and the synthetic corpus. It imports neither the kernels nor the model.

pub mod corpus;
pub mod dataset;
pub mod prompts;
pub mod tokenizer;
