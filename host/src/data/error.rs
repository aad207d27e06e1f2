use std::path::PathBuf;

/// Everything that can go wrong while parsing a data spec or loading a dataset. Every message
/// names the file, path or value at fault.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error(
        "invalid data spec `{spec}`: {reason}; valid examples: fashion-mnist:normal=1, \
         fashion-mnist:normal=1,contamination=0.02, folder:/data/mvtec/bottle, synthetic:metal \
         (synthetic kinds: {kinds})",
        kinds = vigil_shared::synth::KINDS.join(", ")
    )]
    Spec { spec: String, reason: String },

    #[error("invalid load options: {0}")]
    Options(String),

    #[error("{what} not found at {path}: {hint}")]
    NotFound {
        what: &'static str,
        path: PathBuf,
        hint: String,
    },

    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot write {path}: {reason}")]
    Write { path: PathBuf, reason: String },

    #[error("malformed IDX file {path}: {reason}")]
    Idx { path: PathBuf, reason: String },

    #[error("cannot decode image {path}: {reason}")]
    Decode { path: PathBuf, reason: String },

    #[error(
        "image {path} is {found_w}x{found_h} but the dataset's first image {first} is \
         {expected_w}x{expected_h}; all images of one dataset must share a size"
    )]
    ImageSize {
        path: PathBuf,
        found_w: u32,
        found_h: u32,
        first: PathBuf,
        expected_w: u32,
        expected_h: u32,
    },

    #[error("mask {mask} is {mask_w}x{mask_h} but its image {image} is {image_w}x{image_h}")]
    MaskSize {
        mask: PathBuf,
        mask_w: u32,
        mask_h: u32,
        image: PathBuf,
        image_w: u32,
        image_h: u32,
    },

    #[error("cannot turn {what} into a model input: {source}")]
    Preprocess {
        what: String,
        #[source]
        source: vigil_shared::preprocess::PreprocessError,
    },

    #[error("bad dataset layout at {path}: {reason}")]
    Layout { path: PathBuf, reason: String },
}
