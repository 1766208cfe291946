//! Every case of the four shared known-answer files (vendored in tests/data/metrics), through every
//! applicable code path: exact for integer cases, relative 1e-12 for float ones.

use panacea_eval::{
    avg_hausdorff, epsilon_additive, epsilon_multiplicative, expected_utility, hypervolume,
    hypervolume_min_with, igd, igd_plus, inner_product, nondominated_mask, pareto_ranks,
    r2_exact_2d, spacing, sparsity, Duplicates, HvAlgorithm, RefPoint, Sense, SpacingVariant,
};

use crate::common::{assert_close, cases, matrix, vector};

fn hv_is_exact(name: &str) -> bool {
    matches!(name, "moocore_doc_2d" | "pygmo_doc_3d" | "moocore_test_3d" | "scirs2_doc_2d")
        || (name.starts_with("testsuite_") && !name.contains("bug41"))
}

#[test]
fn hv_cases_all_paths() {
    let all = cases("hv_cases.json");
    assert_eq!(all.len(), 28);
    for c in &all {
        let name = c["name"].as_str().unwrap();
        let pts = matrix(&c["points"]);
        let r = vector(&c["ref"]);
        let want = c["hv"].as_f64().unwrap();
        let exact = hv_is_exact(name);
        let d = r.len();
        let hv = hypervolume(&pts, Sense::Min, &RefPoint::Explicit(r.clone())).unwrap();
        assert_close(hv.value, want, exact, &format!("{name} auto"));
        assert_eq!(hv.reference_point, r, "{name}: reference point reported");
        assert_close(
            hypervolume_min_with(&pts, &r, HvAlgorithm::Wfg).unwrap(),
            want,
            exact,
            &format!("{name} wfg"),
        );
        let special = match d {
            2 => Some(HvAlgorithm::Sweep2d),
            3 => Some(HvAlgorithm::Sweep3d),
            4 => Some(HvAlgorithm::Sweep4d),
            5 => Some(HvAlgorithm::Sweep5d),
            _ => None,
        };
        if let Some(alg) = special {
            assert_close(
                hypervolume_min_with(&pts, &r, alg).unwrap(),
                want,
                exact,
                &format!("{name} {alg:?}"),
            );
        }
        // The oracle is exact on integer data too; on floats it agrees to ~1e-14 (README).
        if pts.len() <= 12 {
            let ie = hypervolume_min_with(&pts, &r, HvAlgorithm::InclusionExclusion).unwrap();
            assert_close(ie, want, exact, &format!("{name} inclusion-exclusion"));
        }
        // Maximisation form: negate points and reference point (docs/metrics.md, §0).
        let neg: Vec<Vec<f64>> = pts.iter().map(|p| p.iter().map(|x| -x).collect()).collect();
        let rneg: Vec<f64> = r.iter().map(|x| -x).collect();
        let hv_max = hypervolume(&neg, Sense::Max, &RefPoint::Explicit(rneg)).unwrap();
        assert_close(hv_max.value, want, exact, &format!("{name} max sense"));
    }
}

#[test]
fn hv_rep4d_all_column_permutations_give_29404() {
    let all = cases("hv_cases.json");
    let c = all.iter().find(|c| c["name"] == "testsuite_rep4d_set1").unwrap();
    let pts = matrix(&c["points"]);
    let r = vector(&c["ref"]);
    let mut perms = Vec::new();
    permutations(&mut vec![0, 1, 2, 3], 0, &mut perms);
    assert_eq!(perms.len(), 24);
    for perm in perms {
        let p: Vec<Vec<f64>> =
            pts.iter().map(|row| perm.iter().map(|&k| row[k]).collect()).collect();
        let rp: Vec<f64> = perm.iter().map(|&k| r[k]).collect();
        assert_eq!(
            hypervolume_min_with(&p, &rp, HvAlgorithm::Auto).unwrap(),
            29404.0,
            "perm {perm:?}"
        );
        assert_eq!(
            hypervolume_min_with(&p, &rp, HvAlgorithm::Wfg).unwrap(),
            29404.0,
            "perm {perm:?}"
        );
    }
}

fn permutations(v: &mut Vec<usize>, k: usize, out: &mut Vec<Vec<usize>>) {
    if k == v.len() {
        out.push(v.clone());
        return;
    }
    for i in k..v.len() {
        v.swap(k, i);
        permutations(v, k + 1, out);
        v.swap(k, i);
    }
}

#[test]
fn indicator_cases() {
    let all = cases("indicator_cases.json");
    assert_eq!(all.len(), 8);
    for c in &all {
        let name = c["name"].as_str().unwrap();
        let a = matrix(&c["points"]);
        let r = matrix(&c["reference_set"]);
        let eps_exact = matches!(
            name,
            "ishibuchi2015_ex4_A"
                | "ishibuchi2015_ex4_B"
                | "moocore_doc_r2"
                | "testsuite_epsilon_bug1_min"
        );
        let f = |key: &str| c[key].as_f64().unwrap();
        assert_close(igd(&a, &r, Sense::Min).unwrap(), f("igd"), false, &format!("{name} igd"));
        assert_close(
            igd_plus(&a, &r, Sense::Min).unwrap(),
            f("igd_plus"),
            false,
            &format!("{name} igd+"),
        );
        assert_close(
            avg_hausdorff(&a, &r, Sense::Min).unwrap(),
            f("avg_hausdorff_p1"),
            false,
            &format!("{name} Δ1"),
        );
        assert_close(
            epsilon_additive(&a, &r, Sense::Min).unwrap(),
            f("epsilon_additive"),
            eps_exact,
            &format!("{name} ε+"),
        );
        if let Some(want) = c["epsilon_mult"].as_f64() {
            assert_close(
                epsilon_multiplicative(&a, &r, Sense::Min).unwrap(),
                want,
                eps_exact,
                &format!("{name} ε×"),
            );
        }
        if let Some(want) = c["r2_exact"].as_f64() {
            let z = vector(&c["r2_ideal_point"]);
            assert_close(
                r2_exact_2d(&a, &z, Sense::Min).unwrap(),
                want,
                false,
                &format!("{name} R2"),
            );
        }
        // Maximisation: negating both sets leaves IGD, IGD+ and ε₊ unchanged (docs/metrics.md, §4).
        let na: Vec<Vec<f64>> = a.iter().map(|p| p.iter().map(|x| -x).collect()).collect();
        let nr: Vec<Vec<f64>> = r.iter().map(|p| p.iter().map(|x| -x).collect()).collect();
        assert_close(
            igd_plus(&na, &nr, Sense::Max).unwrap(),
            f("igd_plus"),
            false,
            &format!("{name} igd+ max"),
        );
        assert_close(
            epsilon_additive(&na, &nr, Sense::Max).unwrap(),
            f("epsilon_additive"),
            eps_exact,
            &format!("{name} ε+ max"),
        );
    }
}

#[test]
fn ishibuchi_igd_plus_prefers_the_pareto_better_set() {
    let all = cases("indicator_cases.json");
    let get = |n: &str| all.iter().find(|c| c["name"] == n).unwrap().clone();
    let (a, b) = (get("ishibuchi2015_ex4_A"), get("ishibuchi2015_ex4_B"));
    let rs = matrix(&a["reference_set"]);
    let (pa, pb) = (matrix(&a["points"]), matrix(&b["points"]));
    assert!(igd(&pa, &rs, Sense::Min).unwrap() > igd(&pb, &rs, Sense::Min).unwrap());
    assert!(igd_plus(&pa, &rs, Sense::Min).unwrap() < igd_plus(&pb, &rs, Sense::Min).unwrap());
}

#[test]
fn ndsort_cases() {
    let all = cases("ndsort_cases.json");
    assert_eq!(all.len(), 5);
    for c in &all {
        let name = c["name"].as_str().unwrap();
        let pts = matrix(&c["points"]);
        let want: Vec<usize> =
            c["rank0"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect();
        let mask: Vec<bool> = c["nondominated_mask"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_bool().unwrap())
            .collect();
        assert_eq!(pareto_ranks(&pts, Sense::Min).unwrap(), want, "{name} ranks");
        assert_eq!(
            nondominated_mask(&pts, Sense::Min, Duplicates::KeepAll).unwrap(),
            mask,
            "{name} mask"
        );
        let neg: Vec<Vec<f64>> = pts.iter().map(|p| p.iter().map(|x| -x).collect()).collect();
        assert_eq!(pareto_ranks(&neg, Sense::Max).unwrap(), want, "{name} ranks, max sense");
    }
}

#[test]
fn diversity_cases() {
    let all = cases("diversity_cases.json");
    assert_eq!(all.len(), 6);
    for c in &all {
        let name = c["name"].as_str().unwrap();
        let pts = matrix(&c["points"]);
        for v in SpacingVariant::ALL {
            let want = c["spacing"][v.name()].as_f64().unwrap();
            assert_close(
                spacing(&pts, v).unwrap(),
                want,
                false,
                &format!("{name} spacing {}", v.name()),
            );
        }
        assert_close(
            spacing(&pts, SpacingVariant::L1N).unwrap(),
            c["spacing_pymoo"].as_f64().unwrap(),
            false,
            &format!("{name} pymoo"),
        );
        let sp = c["sparsity_pgmorl"].as_f64().unwrap();
        for sense in [Sense::Max, Sense::Min] {
            assert_close(
                sparsity(&pts, sense, false).unwrap(),
                sp,
                false,
                &format!("{name} sparsity"),
            );
        }
        if let Some(want) = c["inner_product_mean"].as_f64() {
            let prefs = matrix(&c["preference_vectors"]);
            assert_close(inner_product(&prefs, &pts).unwrap(), want, false, &format!("{name} IP"));
            assert_close(
                expected_utility(&prefs, &pts).unwrap(),
                c["eum_linear"].as_f64().unwrap(),
                false,
                &format!("{name} EUM"),
            );
        }
    }
}

#[test]
fn sparsity_on_the_nondominated_subset_matches_the_readme_table() {
    // tests/data/metrics/README.md, "Sparsity and the non-dominated filter".
    let all = cases("diversity_cases.json");
    let table = [
        ("random_d2", Sense::Max, 6, 0.0998605487149862),
        ("random_d2", Sense::Min, 6, 0.1172122221598885),
        ("random_d3", Sense::Max, 9, 0.04008625188340727),
        ("random_d3", Sense::Min, 10, 0.042363088833748744),
    ];
    for (name, sense, n_nd, want) in table {
        let c = all.iter().find(|c| c["name"] == name).unwrap();
        let pts = matrix(&c["points"]);
        let mask = nondominated_mask(&pts, sense, Duplicates::KeepAll).unwrap();
        assert_eq!(mask.iter().filter(|m| **m).count(), n_nd, "{name} {sense}");
        assert_close(sparsity(&pts, sense, true).unwrap(), want, false, &format!("{name} {sense}"));
    }
}
