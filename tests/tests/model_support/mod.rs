//! The model of the tests that check delivery, the HTTP view, logs or the service protocol
//! rather than verdicts: a one-epoch 32² GANomaly on brushed metal, exported (~20 s to train
//! on 2 cores), in `dir/model`.

use std::path::{Path, PathBuf};

use vigil_host::demo::{train_line_model, ModelRecipe};
use vigil_shared::synth::SurfaceKind;

pub fn small_model(dir: &Path) -> PathBuf {
    let model = dir.join("model");
    let recipe = ModelRecipe {
        kind: SurfaceKind::BrushedMetal,
        size: 32,
        epochs: 1,
        seed: 1,
    };
    train_line_model(&model, &recipe, false).unwrap();
    model
}
