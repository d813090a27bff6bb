//! Checkpoints in the safetensors format: the model's named tensors, the
//! optimizer state as `optimizer.m.<name>` / `optimizer.v.<name>`, and the
//! model configuration and step count as string metadata.

use super::model::{GradientModel, ParamTensor, TransformerModel};
use super::optim::OptimizerKind;
use super::trainer::OptimizerState;
use super::transformer::{Transformer, TransformerConfig};
use crate::error::{invalid, Error, Result};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// Value of the `format` metadata key.
pub const CHECKPOINT_FORMAT: &str = "cllm-checkpoint-1";

/// What a checkpoint holds besides the parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointContents {
    /// The model's parameters, in the model's flat layout.
    pub params: Vec<f32>,
    /// Optimizer state, when the checkpoint has one.
    pub state: Option<OptimizerState>,
    /// The optimizer that produced the state.
    pub optimizer: Option<OptimizerKind>,
    /// Every metadata entry.
    pub metadata: HashMap<String, String>,
}

fn io_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::System(format!("{}: {e}", path.display()))
}

fn le_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Writes `params` (and `state` for `optimizer`) of `model` to `path`,
/// through a temporary file and a rename, so a crash never leaves a
/// half-written checkpoint under the final name.
pub fn save(
    path: &Path,
    model: &dyn GradientModel,
    params: &[f32],
    state: Option<(&OptimizerState, OptimizerKind)>,
    extra_metadata: &[(String, String)],
) -> Result<()> {
    let n = model.num_params();
    if params.len() != n {
        return Err(invalid!("{} parameters given, the model has {n}", params.len()));
    }
    let tensors = model.tensors();
    let mut owned: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for t in &tensors {
        owned.push((t.name.clone(), t.shape.clone(), le_bytes(&params[t.offset..t.offset + t.len])));
    }
    let mut metadata: HashMap<String, String> = extra_metadata.iter().cloned().collect();
    metadata.insert("format".into(), CHECKPOINT_FORMAT.into());
    metadata.insert("num_params".into(), n.to_string());
    if let Some((st, kind)) = state {
        if st.m.len() != n || (kind.state_vectors() == 2 && st.v.len() != n) {
            return Err(invalid!("optimizer state does not match the model's {n} parameters"));
        }
        for t in &tensors {
            let r = t.offset..t.offset + t.len;
            owned.push((format!("optimizer.m.{}", t.name), t.shape.clone(), le_bytes(&st.m[r.clone()])));
            if kind.state_vectors() == 2 {
                owned.push((format!("optimizer.v.{}", t.name), t.shape.clone(), le_bytes(&st.v[r])));
            }
        }
        metadata.insert("optimizer".into(), kind.name().into());
        metadata.insert("step".into(), st.step.to_string());
    }
    let views = owned
        .iter()
        .map(|(name, shape, bytes)| Ok((name.as_str(), TensorView::new(Dtype::F32, shape.clone(), bytes)?)))
        .collect::<std::result::Result<Vec<_>, safetensors::SafeTensorError>>()
        .map_err(|e| Error::System(format!("could not build the checkpoint: {e}")))?;
    let bytes = safetensors::serialize(views, Some(metadata))
        .map_err(|e| Error::System(format!("could not serialise the checkpoint: {e}")))?;
    // Unique per process and call: concurrent saves never share a file.
    static SAVES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let serial = SAVES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut tmp_name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    tmp_name.push(format!(".tmp-{}-{serial}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    std::fs::write(&tmp, &bytes).map_err(|e| io_error(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io_error(path, e)
    })
}

/// Reads the metadata of the checkpoint at `path` (to build the model
/// before loading its parameters).
pub fn read_metadata(path: &Path) -> Result<HashMap<String, String>> {
    let bytes = std::fs::read(path).map_err(|e| io_error(path, e))?;
    metadata_of(path, &bytes)
}

fn metadata_of(path: &Path, bytes: &[u8]) -> Result<HashMap<String, String>> {
    let (_, meta) =
        SafeTensors::read_metadata(bytes).map_err(|e| invalid!("{}: not a safetensors file: {e}", path.display()))?;
    let map = meta.metadata().clone().unwrap_or_default();
    if map.get("format").map(String::as_str) != Some(CHECKPOINT_FORMAT) {
        return Err(invalid!("{}: not a libcllm checkpoint (format {:?})", path.display(), map.get("format")));
    }
    Ok(map)
}

/// Loads a checkpoint of `model` from `path`: every tensor must be there
/// with the model's shape (extra tensors are an error too, since they mean
/// another model).
pub fn load(path: &Path, model: &dyn GradientModel) -> Result<CheckpointContents> {
    let bytes = std::fs::read(path).map_err(|e| io_error(path, e))?;
    let metadata = metadata_of(path, &bytes)?;
    load_bytes(path, &bytes, metadata, model)
}

/// Loads a transformer checkpoint whole: the model built from the
/// configuration in its metadata, and its contents (one read of the file).
pub fn load_transformer(path: &Path) -> Result<(TransformerModel, CheckpointContents)> {
    let bytes = std::fs::read(path).map_err(|e| io_error(path, e))?;
    let metadata = metadata_of(path, &bytes)?;
    let model = TransformerModel(Arc::new(Transformer::new(transformer_config_from(&metadata)?)?));
    let contents = load_bytes(path, &bytes, metadata, &model)?;
    Ok((model, contents))
}

/// [`load`] of a file already read and its metadata already checked.
fn load_bytes(
    path: &Path,
    bytes: &[u8],
    metadata: HashMap<String, String>,
    model: &dyn GradientModel,
) -> Result<CheckpointContents> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| invalid!("{}: malformed safetensors: {e}", path.display()))?;
    let n = model.num_params();
    let tensors = model.tensors();
    let optimizer = metadata.get("optimizer").map(|s| OptimizerKind::parse(s)).transpose()?;
    let view = |name: &str, t: &ParamTensor| -> Result<TensorView<'_>> {
        let view = st.tensor(name).map_err(|_| invalid!("{}: tensor {name} is missing", path.display()))?;
        if view.dtype() != Dtype::F32 || view.shape() != t.shape.as_slice() {
            return Err(invalid!(
                "{}: tensor {name} is {:?} {:?}, the model needs F32 {:?}",
                path.display(),
                view.dtype(),
                view.shape(),
                t.shape
            ));
        }
        Ok(view)
    };
    // Every tensor is checked before anything is allocated, so a small
    // malformed file cannot make the loader allocate a model's worth.
    let mut names: Vec<String> = tensors.iter().map(|t| t.name.clone()).collect();
    for prefix in ["optimizer.m.", "optimizer.v."].iter().take(optimizer.map_or(0, OptimizerKind::state_vectors)) {
        names.extend(tensors.iter().map(|t| format!("{prefix}{}", t.name)));
    }
    for (i, name) in names.iter().enumerate() {
        view(name, &tensors[i % tensors.len()])?;
    }
    if st.len() != names.len() {
        return Err(invalid!("{}: {} tensors, this model's checkpoint has {}", path.display(), st.len(), names.len()));
    }
    let read = |name: &str, t: &ParamTensor, out: &mut [f32]| -> Result<()> {
        for (dst, src) in out.iter_mut().zip(view(name, t)?.data().chunks_exact(4)) {
            *dst = f32::from_le_bytes([src[0], src[1], src[2], src[3]]);
        }
        Ok(())
    };
    let mut params = vec![0.0; n];
    for t in &tensors {
        read(&t.name, t, &mut params[t.offset..t.offset + t.len])?;
    }
    let state = match optimizer {
        None => None,
        Some(kind) => {
            let step = metadata
                .get("step")
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| invalid!("{}: optimizer state without a valid step", path.display()))?;
            let mut state = OptimizerState::new(kind, n);
            state.step = step;
            for t in &tensors {
                let r = t.offset..t.offset + t.len;
                read(&format!("optimizer.m.{}", t.name), t, &mut state.m[r.clone()])?;
                if kind.state_vectors() == 2 {
                    read(&format!("optimizer.v.{}", t.name), t, &mut state.v[r])?;
                }
            }
            Some(state)
        }
    };
    Ok(CheckpointContents { params, state, optimizer, metadata })
}

/// Metadata entries describing a transformer configuration.
pub fn transformer_metadata(c: &TransformerConfig) -> Vec<(String, String)> {
    [
        ("model", "transformer".to_string()),
        ("vocab_size", c.vocab_size.to_string()),
        ("embedding_dim", c.dim.to_string()),
        ("num_layers", c.layers.to_string()),
        ("num_heads", c.heads.to_string()),
        ("ff_dim", c.ff_dim.to_string()),
        ("max_seq_len", c.max_seq_len.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// The transformer configuration recorded by [`transformer_metadata`].
pub fn transformer_config_from(metadata: &HashMap<String, String>) -> Result<TransformerConfig> {
    if metadata.get("model").map(String::as_str) != Some("transformer") {
        return Err(invalid!("the checkpoint does not hold a transformer (model = {:?})", metadata.get("model")));
    }
    let field = |k: &str| -> Result<usize> {
        metadata.get(k).and_then(|v| v.parse().ok()).ok_or_else(|| invalid!("checkpoint metadata lacks a valid {k}"))
    };
    let config = TransformerConfig {
        vocab_size: field("vocab_size")?,
        dim: field("embedding_dim")?,
        layers: field("num_layers")?,
        heads: field("num_heads")?,
        ff_dim: field("ff_dim")?,
        max_seq_len: field("max_seq_len")?,
    };
    config.validate()?;
    Ok(config)
}
