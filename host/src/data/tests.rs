use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::idx::{parse_idx, read_idx, read_labelled};
use super::*;

fn opts(size: usize, channels: usize) -> LoadOptions {
    LoadOptions {
        image_size: size,
        channels,
        data_root: None,
        seed: 0,
    }
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

// ------------------------------------------------------------------ specs

#[test]
fn spec_parses_and_round_trips() {
    let cases = [
        (
            "fashion-mnist:normal=1",
            DataSpec::FashionMnist {
                normal: 1,
                contamination: 0.0,
            },
        ),
        (
            "fashion-mnist:normal=1,contamination=0.02",
            DataSpec::FashionMnist {
                normal: 1,
                contamination: 0.02,
            },
        ),
        (
            "folder:/data/mvtec/bottle",
            DataSpec::Folder("/data/mvtec/bottle".into()),
        ),
        (
            "synthetic:metal",
            DataSpec::Synthetic {
                kind: SurfaceKind::BrushedMetal,
            },
        ),
        (
            "synthetic:fabric",
            DataSpec::Synthetic {
                kind: SurfaceKind::WovenFabric,
            },
        ),
    ];
    for (s, want) in cases {
        let got: DataSpec = s.parse().unwrap();
        assert_eq!(got, want, "{s}");
        assert_eq!(got.to_string(), s, "canonical form of {s}");
        assert_eq!(got.to_string().parse::<DataSpec>().unwrap(), got);
    }
    // aliases normalise to the canonical form
    for (alias, canonical) in [
        ("fmnist:normal=Trouser", "fashion-mnist:normal=1"),
        (
            "fashion-mnist:contamination=0.1, normal=9",
            "fashion-mnist:normal=9,contamination=0.1",
        ),
        (
            "fashion-mnist:normal=0,contamination=0",
            "fashion-mnist:normal=0",
        ),
        ("synthetic:brushed-metal", "synthetic:metal"),
        ("synthetic:woven-fabric", "synthetic:fabric"),
        ("synthetic", "synthetic:metal"),
    ] {
        assert_eq!(
            alias.parse::<DataSpec>().unwrap().to_string(),
            canonical,
            "{alias}"
        );
    }
}

#[test]
fn bad_specs_name_the_bad_part() {
    for (s, needle) in [
        ("", "empty"),
        ("mnist:normal=1", "mnist"),
        ("fashion-mnist", "normal=C"),
        ("fashion-mnist:normal=10", "10"),
        ("fashion-mnist:normal=x", "x"),
        ("fashion-mnist:normal", "normal"),
        ("fashion-mnist:normal=1,contamination=0.5", "0.5"),
        ("fashion-mnist:normal=1,contamination=-0.1", "-0.1"),
        ("fashion-mnist:normal=1,contamination=NaN", "NaN"),
        ("fashion-mnist:normal=1,seed=3", "seed"),
        ("folder:", "folder"),
        ("synthetic:wood", "wood"),
    ] {
        let e = s.parse::<DataSpec>().unwrap_err();
        assert!(matches!(e, DataError::Spec { .. }), "{s}: {e:?}");
        let msg = e.to_string();
        assert!(msg.contains(needle), "{s}: message lacks `{needle}`: {msg}");
        assert!(
            msg.contains("fashion-mnist:normal=1") && msg.contains("synthetic:metal"),
            "{msg}"
        );
    }
}

// ------------------------------------------------------------------ IDX

fn idx_bytes(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        b.extend_from_slice(&d.to_be_bytes());
    }
    b.extend_from_slice(data);
    b
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

#[test]
fn idx_files_parse_and_truncation_names_the_file() {
    let dir = tmp();
    let data: Vec<u8> = (0..18).collect();
    let raw = idx_bytes(&[2, 3, 3], &data);
    let plain = dir.path().join("tiny-images-idx3-ubyte");
    let packed = dir.path().join("tiny-images-idx3-ubyte.gz");
    std::fs::write(&plain, &raw).unwrap();
    std::fs::write(&packed, gz(&raw)).unwrap();
    for p in [&plain, &packed] {
        let a = read_idx(p).unwrap();
        assert_eq!(a.dims, vec![2, 3, 3]);
        assert_eq!(a.data, data);
    }

    let cut = dir.path().join("cut-images-idx3-ubyte");
    std::fs::write(&cut, &raw[..raw.len() - 5]).unwrap();
    let msg = read_idx(&cut).unwrap_err().to_string();
    assert!(
        msg.contains("cut-images-idx3-ubyte") && msg.contains("truncated"),
        "{msg}"
    );

    let cut_gz = dir.path().join("cut-images-idx3-ubyte.gz");
    let g = gz(&raw);
    std::fs::write(&cut_gz, &g[..g.len() - 12]).unwrap();
    let msg = read_idx(&cut_gz).unwrap_err().to_string();
    assert!(msg.contains("cut-images-idx3-ubyte.gz"), "{msg}");

    let p = Path::new("x.idx");
    assert!(parse_idx(p, vec![0, 0])
        .unwrap_err()
        .to_string()
        .contains("truncated"));
    assert!(parse_idx(p, vec![8, 0, 8, 1, 0, 0, 0, 0])
        .unwrap_err()
        .to_string()
        .contains("magic"));
    assert!(parse_idx(p, idx_bytes(&[2], &[1, 2, 3]))
        .unwrap_err()
        .to_string()
        .contains("trailing"));
    let mut float = idx_bytes(&[1], &[0, 0, 0, 0]);
    float[2] = 0x0D;
    assert!(parse_idx(p, float)
        .unwrap_err()
        .to_string()
        .contains("0x0d"));

    // labels: count must match, values below the class count
    let labels = dir.path().join("tiny-labels-idx1-ubyte");
    std::fs::write(&labels, idx_bytes(&[2], &[1, 7])).unwrap();
    let set = read_labelled(&packed, &labels, 10).unwrap();
    assert_eq!((set.len(), set.rows, set.cols), (2, 3, 3));
    assert_eq!(set.image(1), &data[9..]);
    std::fs::write(&labels, idx_bytes(&[3], &[1, 7, 2])).unwrap();
    let msg = read_labelled(&packed, &labels, 10).unwrap_err().to_string();
    assert!(msg.contains("tiny-labels-idx1-ubyte"), "{msg}");
    std::fs::write(&labels, idx_bytes(&[2], &[1, 12])).unwrap();
    assert!(read_labelled(&packed, &labels, 10)
        .unwrap_err()
        .to_string()
        .contains("label 12"));
}

// ------------------------------------------------------------------ Fashion-MNIST

#[test]
fn fashion_mnist_one_class_split() {
    let root = Path::new(fmnist::DEFAULT_ROOT);
    assert!(
        root.is_dir(),
        "{} missing: apt-get install dataset-fashion-mnist",
        root.display()
    );
    let mut o = opts(32, 1);
    o.data_root = Some(root.to_path_buf());
    let spec: DataSpec = "fashion-mnist:normal=1".parse().unwrap();
    let t = Instant::now();
    let ds = load(&spec, &o).unwrap();
    eprintln!(
        "fashion-mnist class 1 at 32x32: {:.2} s",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(
        (ds.train.len(), ds.val.len(), ds.test.len()),
        (5400, 600, 10000)
    );
    assert_eq!(Dataset::counts(&ds.test), (1000, 9000));
    assert_eq!(Dataset::counts(&ds.train), (5400, 0));
    assert_eq!(Dataset::counts(&ds.val), (600, 0));
    assert!(ds.train.iter().chain(&ds.val).all(|s| s.class == "Trouser"));
    assert!(ds
        .test
        .iter()
        .all(|s| s.mask.is_none() && s.image.len() == 32 * 32));
    assert!(ds
        .test
        .iter()
        .any(|s| s.class == "Ankle boot" && s.anomalous));
    assert_eq!(ds.test[42].name, "fmnist-test-00042");
    assert!(!ds.has_masks());
    assert_eq!(ds.spec, "fashion-mnist:normal=1");
    let (lo, hi) = ds.train[0]
        .image
        .iter()
        .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    assert!(lo >= -1.0 && hi <= 1.0 && hi > 0.0, "range {lo}..{hi}");
    // a background pixel is -1
    assert_eq!(ds.train[0].image[0], -1.0);

    // contamination: round(0.02 * 5400) = 108 anomalous training images, same val split
    let spec: DataSpec = "fashion-mnist:normal=1,contamination=0.02".parse().unwrap();
    let dc = load(&spec, &o).unwrap();
    assert_eq!(Dataset::counts(&dc.train), (5400, 108));
    assert!(dc
        .train
        .iter()
        .filter(|s| s.anomalous)
        .all(|s| s.class != "Trouser" && s.name.starts_with("fmnist-train-")));
    let names = |v: &[Sample]| v.iter().map(|s| s.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(&dc.val), names(&ds.val));
    assert_eq!(dc.test.len(), 10000);

    // another seed, another validation tenth; 3 channels replicate grey
    let mut o3 = o.clone();
    o3.seed = 1;
    o3.channels = 3;
    let d3 = load(&"fashion-mnist:normal=1".parse().unwrap(), &o3).unwrap();
    assert_ne!(names(&d3.val), names(&ds.val));
    let img = &d3.train[0].image;
    assert_eq!(img.len(), 3 * 1024);
    assert_eq!(img[..1024], img[1024..2048]);
}

#[test]
fn missing_fashion_mnist_says_how_to_install() {
    let dir = tmp();
    let mut o = opts(32, 1);
    o.data_root = Some(dir.path().join("nowhere"));
    let msg = load(&"fashion-mnist:normal=1".parse().unwrap(), &o)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("nowhere") && msg.contains("apt-get install dataset-fashion-mnist"),
        "{msg}"
    );
    o.data_root = Some(dir.path().to_path_buf());
    let msg = load(&"fashion-mnist:normal=1".parse().unwrap(), &o)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("train-images-idx3-ubyte.gz") && msg.contains("VIGIL_DATA"),
        "{msg}"
    );
}

// ------------------------------------------------------------------ folders

fn luma_mean(s: &Sample, size: usize, pick: impl Fn(usize) -> bool) -> f32 {
    let n = size * size;
    let c = s.image.len() / n;
    let (mut sum, mut k) = (0.0, 0);
    for i in (0..n).filter(|&i| pick(i)) {
        sum += (0..c).map(|ch| s.image[ch * n + i]).sum::<f32>() / c as f32;
        k += 1;
    }
    sum / k.max(1) as f32
}

#[test]
fn synthetic_folder_round_trips_with_aligned_masks() {
    let dir = tmp();
    let root = dir.path().join("metal");
    let summary =
        write_synthetic_folder(&root, SurfaceKind::BrushedMetal, 40, 64, 3, 0.5, 7).unwrap();
    assert_eq!(summary.train_good, 40);
    assert_eq!(summary.test_good, 10);
    assert_eq!(summary.total_defective(), 10);
    assert!(
        summary.test_defective.iter().all(|(_, n)| *n >= 1),
        "{summary:?}"
    );
    assert_eq!(summary.masks, 10);
    assert!(root.join("train/good/000.png").is_file());
    assert!(root.join("test/scratch/000.png").is_file());
    assert!(root.join("ground_truth/scratch/000_mask.png").is_file());
    assert!(summary.to_string().contains("train/good 40"));
    // never writes over an earlier dataset
    let msg = write_synthetic_folder(&root, SurfaceKind::BrushedMetal, 4, 64, 3, 0.5, 7)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("already exists"), "{msg}");

    for (size, ch) in [(64, 3), (32, 1)] {
        let spec = DataSpec::Folder(root.clone());
        let ds = load(&spec, &opts(size, ch)).unwrap();
        assert_eq!((ds.train.len(), ds.val.len(), ds.test.len()), (36, 4, 20));
        assert_eq!(Dataset::counts(&ds.test), (10, 10));
        assert!(ds.has_masks());
        assert!(ds
            .train
            .iter()
            .all(|s| s.mask.is_none() && s.image.len() == ch * size * size));
        for s in &ds.test {
            let m = s.mask.as_ref().expect("every test image has a mask");
            assert_eq!(m.len(), size * size);
            if !s.anomalous {
                assert_eq!(s.class, "good");
                assert!(m.iter().all(|&b| !b));
                continue;
            }
            let area = m.iter().filter(|&&b| b).count();
            assert!(area >= 3, "{}/{}: mask area {area}", s.class, s.name);
            // the mask sits on the defect: pixels inside differ clearly from those outside
            let inside = luma_mean(s, size, |i| m[i]);
            let outside = luma_mean(s, size, |i| !m[i]);
            assert!(
                (inside - outside).abs() > 0.25,
                "{}/{} at {size}: inside {inside} vs outside {outside}",
                s.class,
                s.name
            );
        }
    }

    // the same spec without ground truth: no masks
    std::fs::remove_dir_all(root.join("ground_truth")).unwrap();
    let ds = load(&DataSpec::Folder(root.clone()), &opts(32, 1)).unwrap();
    assert!(!ds.has_masks());
}

#[test]
fn folder_errors_name_the_file() {
    let dir = tmp();
    let root = dir.path().join("fabric");
    write_synthetic_folder(&root, SurfaceKind::WovenFabric, 12, 32, 1, 0.5, 1).unwrap();
    let o = opts(32, 1);
    let spec = DataSpec::Folder(root.clone());
    load(&spec, &o).unwrap();

    // an image of another size
    let odd = root.join("test/good/001.png");
    image::save_buffer(
        &odd,
        &[128u8; 10 * 12],
        10,
        12,
        image::ExtendedColorType::L8,
    )
    .unwrap();
    let msg = load(&spec, &o).unwrap_err().to_string();
    assert!(
        msg.contains("001.png") && msg.contains("10x12") && msg.contains("32x32"),
        "{msg}"
    );
    std::fs::remove_file(&odd).unwrap();

    // an undecodable image
    let junk = root.join("train/good/zzz.png");
    std::fs::write(&junk, b"not a png").unwrap();
    let msg = load(&spec, &o).unwrap_err().to_string();
    assert!(msg.contains("zzz.png"), "{msg}");
    std::fs::remove_file(&junk).unwrap();

    // a mask of another size
    let mask = root.join("ground_truth/crack/000_mask.png");
    image::save_buffer(
        &mask,
        &[255u8; 16 * 16],
        16,
        16,
        image::ExtendedColorType::L8,
    )
    .unwrap();
    let msg = load(&spec, &o).unwrap_err().to_string();
    assert!(
        msg.contains("000_mask.png") && msg.contains("test/crack/000.png"),
        "{msg}"
    );
    std::fs::remove_file(&mask).unwrap();
    let msg = load(&spec, &o).unwrap_err().to_string();
    assert!(
        msg.contains("000_mask.png") && msg.contains("not found"),
        "{msg}"
    );

    // missing dataset and missing train/good
    let msg = load(&DataSpec::Folder(dir.path().join("absent")), &o)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("absent") && msg.contains("train/good"),
        "{msg}"
    );
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(empty.join("test/good")).unwrap();
    let msg = load(&DataSpec::Folder(empty.clone()), &o)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains(&*empty.join("train").join("good").to_string_lossy()),
        "{msg}"
    );
}

#[test]
fn folder_reads_bmp_and_grey_to_rgb() {
    let dir = tmp();
    let good = dir.path().join("train/good");
    std::fs::create_dir_all(&good).unwrap();
    let rgb: Vec<u8> = (0..8 * 8 * 3).map(|i| (i % 251) as u8).collect();
    image::save_buffer(
        good.join("a.bmp"),
        &rgb,
        8,
        8,
        image::ExtendedColorType::Rgb8,
    )
    .unwrap();
    image::save_buffer(
        good.join("b.png"),
        &[200u8; 64],
        8,
        8,
        image::ExtendedColorType::L8,
    )
    .unwrap();
    let ds = load(&DataSpec::Folder(dir.path().to_path_buf()), &opts(8, 3)).unwrap();
    let all: Vec<&Sample> = ds.train.iter().chain(&ds.val).collect();
    assert_eq!(all.len(), 2);
    let a = all.iter().find(|s| s.name == "a.bmp").unwrap();
    assert_eq!(a.image[0], rgb[0] as f32 * 2.0 / 255.0 - 1.0);
    assert_eq!(a.image[64], rgb[1] as f32 * 2.0 / 255.0 - 1.0);
    let b = all.iter().find(|s| s.name == "b.png").unwrap();
    assert!(b
        .image
        .iter()
        .all(|&v| (v - (200.0 * 2.0 / 255.0 - 1.0)).abs() < 1e-6));
    assert!(ds.test.is_empty());
}

// ------------------------------------------------------------------ synthetic, helpers

#[test]
fn synthetic_dataset_in_memory() {
    let spec: DataSpec = "synthetic:fabric".parse().unwrap();
    let t = Instant::now();
    let ds = load(&spec, &opts(32, 1)).unwrap();
    eprintln!(
        "synthetic:fabric at 32x32: {:.2} s",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(
        (ds.train.len(), ds.val.len(), ds.test.len()),
        (1000, 100, 400)
    );
    assert_eq!(Dataset::counts(&ds.test), (200, 200));
    assert_eq!(Dataset::counts(&ds.train), (1000, 0));
    assert!(ds.has_masks());
    assert_eq!(ds.test[42].name, "synthetic-test-0042");
    for d in DefectKind::ALL {
        assert_eq!(ds.test.iter().filter(|s| s.class == d.name()).count(), 50);
    }
    for s in ds.test.iter().filter(|s| s.anomalous) {
        assert!(s.mask.as_ref().unwrap().iter().any(|&b| b), "{}", s.name);
    }
    let again = load(&spec, &opts(32, 1)).unwrap();
    assert_eq!(again.test, ds.test);
    assert_eq!(again.train[999], ds.train[999]);
}

#[test]
fn holdout_is_a_deterministic_tenth() {
    let (t, v) = holdout_tenth((0..6000).collect::<Vec<u32>>(), 5);
    assert_eq!((t.len(), v.len()), (5400, 600));
    assert!(v.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(holdout_tenth((0..6000).collect::<Vec<u32>>(), 5).1, v);
    assert_eq!(holdout_tenth(vec![1, 2, 3], 0).1.len(), 1);
    assert_eq!(holdout_tenth(vec![1], 0).1.len(), 0);
}

#[test]
fn bad_options_are_errors() {
    let spec: DataSpec = "synthetic:metal".parse().unwrap();
    assert!(load(&spec, &opts(32, 2))
        .unwrap_err()
        .to_string()
        .contains("channels"));
    assert!(load(&spec, &opts(0, 1))
        .unwrap_err()
        .to_string()
        .contains("size"));
    let d = tmp();
    let p: PathBuf = d.path().join("x");
    assert!(write_synthetic_folder(&p, SurfaceKind::BrushedMetal, 0, 32, 1, 0.5, 0).is_err());
    assert!(write_synthetic_folder(&p, SurfaceKind::BrushedMetal, 4, 32, 1, 1.5, 0).is_err());
}

#[test]
fn write_line_writes_frames_in_order_with_labels_and_is_reproducible() {
    let dir = tmp();
    let a = dir.path().join("a");
    let parts = write_line(&a, SurfaceKind::BrushedMetal, 40, 32, 1, 0.25, 3).unwrap();
    assert_eq!(parts.len(), 40);
    let n_def = parts.iter().filter(|p| p.defect.is_some()).count();
    assert!((3..=20).contains(&n_def), "{n_def} defective of 40 at 0.25");
    // Defect kinds round-robin, so every kind is on a line with four or more defects.
    for k in DefectKind::ALL {
        assert!(parts.iter().any(|p| p.defect == Some(k)), "no {k:?}");
    }
    let labels = std::fs::read_to_string(a.join(LINE_LABELS)).unwrap();
    let rows: Vec<&str> = labels.lines().collect();
    assert_eq!(rows[0], "name,defect");
    assert_eq!(rows.len(), 41);
    for (row, p) in rows[1..].iter().zip(&parts) {
        let want = format!("{},{}", p.name, p.defect.map_or("good", DefectKind::name));
        assert_eq!(*row, want);
        let img = image::open(a.join(&p.name)).unwrap();
        assert_eq!((img.width(), img.height()), (32, 32));
    }
    // File-name order is line order (what vigild's folder replay uses).
    let mut names: Vec<&str> = parts.iter().map(|p| p.name.as_str()).collect();
    names.sort();
    assert_eq!(
        names,
        parts.iter().map(|p| p.name.as_str()).collect::<Vec<_>>()
    );

    // Same seed, same line; a non-empty directory is refused.
    let b = dir.path().join("b");
    assert_eq!(
        write_line(&b, SurfaceKind::BrushedMetal, 40, 32, 1, 0.25, 3).unwrap(),
        parts
    );
    assert_eq!(
        std::fs::read(a.join("part_00007.png")).unwrap(),
        std::fs::read(b.join("part_00007.png")).unwrap()
    );
    let err = write_line(&a, SurfaceKind::BrushedMetal, 40, 32, 1, 0.25, 3).unwrap_err();
    assert!(err.to_string().contains("already holds files"), "{err}");
    assert!(write_line(
        &dir.path().join("c"),
        SurfaceKind::BrushedMetal,
        0,
        32,
        1,
        0.2,
        0
    )
    .is_err());
}
