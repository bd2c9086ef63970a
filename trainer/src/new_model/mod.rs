//! Where models come from: a fresh tiny model (`init`), a student pruned from a teacher's layers
//! (`prune`), and a Llama GGUF file imported to the Hugging Face layout (`gguf_import`).

pub mod gguf_import;
pub mod init;
pub mod prune;
