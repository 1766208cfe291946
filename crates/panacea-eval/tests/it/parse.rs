//! `parse_points`: JSON and CSV point files, with errors that name the file and line.

use panacea_eval::{parse_points, EvalError};

fn line_of(e: EvalError) -> (String, usize, String) {
    match e {
        EvalError::Parse { source_name, line, detail } => (source_name, line, detail),
        other => panic!("expected a parse error, got {other:?}"),
    }
}

#[test]
fn json_array_of_arrays() {
    let text = "[\n  [1, 2.5],\n  [-3e-1, 4]\n]\n";
    assert_eq!(parse_points(text, "f.json", None).unwrap(), vec![vec![1.0, 2.5], vec![-0.3, 4.0]]);
    assert_eq!(parse_points("[[1,2],[3,4]]", "f.json", Some(2)).unwrap().len(), 2);
}

#[test]
fn csv_with_header_comments_and_blank_lines() {
    let text = "# scores\nhelpful, harmless\n1.0, 2.0\n\n3,4\n";
    assert_eq!(parse_points(text, "f.csv", None).unwrap(), vec![vec![1.0, 2.0], vec![3.0, 4.0]]);
}

#[test]
fn ragged_json_row_names_its_line() {
    let text = "[\n  [1, 2],\n  [3, 4, 5]\n]";
    let (src, line, detail) = line_of(parse_points(text, "pts.json", None).unwrap_err());
    assert_eq!((src.as_str(), line), ("pts.json", 3));
    assert!(detail.contains("ragged"), "{detail}");
}

#[test]
fn ragged_csv_row_names_its_line() {
    let (_, line, _) = line_of(parse_points("1,2\n3,4\n5\n", "p.csv", None).unwrap_err());
    assert_eq!(line, 3);
}

#[test]
fn wrong_dimension_for_the_reference_point() {
    let (_, line, detail) = line_of(parse_points("1,2,3\n", "p.csv", Some(2)).unwrap_err());
    assert_eq!(line, 1);
    assert!(detail.contains("reference point has 2"), "{detail}");
}

#[test]
fn non_numbers_name_their_line() {
    let (_, line, detail) =
        line_of(parse_points("[[1, 2],\n [\"x\", 2]]", "p.json", None).unwrap_err());
    assert_eq!(line, 2);
    assert!(detail.contains("not a number"), "{detail}");
    let (_, line, _) = line_of(parse_points("a,b\n1,2\n3,oops\n", "p.csv", None).unwrap_err());
    assert_eq!(line, 3);
    let (_, line, detail) = line_of(parse_points("1,2\nNaN,2\n", "p.csv", None).unwrap_err());
    assert_eq!(line, 2);
    assert!(detail.contains("not finite"), "{detail}");
}

#[test]
fn malformed_json_and_hostile_bytes_give_errors_not_panics() {
    for text in [
        "[",
        "[[1,2]",
        "[[1,2]] x",
        "[1,2]",
        "[[]]",
        "[[1,,2]]",
        "[[1 2]]",
        "[\u{0}\u{ff}é]",
        "",
        "   \n",
    ] {
        let r = parse_points(text, "bad", None);
        assert!(matches!(r, Err(EvalError::Parse { .. })), "{text:?} gave {r:?}");
    }
}

#[test]
fn reference_point_argument() {
    use panacea_eval::RefPoint;
    assert_eq!("auto".parse::<RefPoint>().unwrap(), RefPoint::Auto);
    assert_eq!(" -1, 2.5 ".parse::<RefPoint>().unwrap(), RefPoint::Explicit(vec![-1.0, 2.5]));
    for bad in ["", "1,,2", "1,x", "nan,1", "inf"] {
        assert!(matches!(bad.parse::<RefPoint>(), Err(EvalError::InvalidValue { .. })), "{bad:?}");
    }
}
