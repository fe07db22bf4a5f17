from usss_tf.serving import contract


def test_signature_names_and_served_domains():
    names = contract.signature_names(["a", "b"])
    assert names == ["serving_default", "segment_a", "segment_a_tensor", "segment_b", "segment_b_tensor",
                     "embed", "embed_a", "embed_b"]
    assert contract.signature_names(["a"], with_embedding=False) == [
        "serving_default", "segment_a", "segment_a_tensor"]
    assert contract.served_domains(names) == ["a", "b"]


def test_version_folders_are_integer_folders_only(tmp_path):
    for name in ("1", "3", "tmp-4", ".tmp-9-abc", "latest"):
        (tmp_path / name).mkdir()
    (tmp_path / "7").write_text("a file, not a version")
    (tmp_path / "3" / "saved_model.pb").write_text("x")
    assert sorted(contract.version_folders(tmp_path)) == [1, 3]
    assert list(contract.version_folders(tmp_path, complete_only=True)) == [3]
    assert contract.version_folders(tmp_path / "missing") == {}


def test_limits_admit_a_2048_square_with_a_margin():
    assert contract.MAX_IMAGE_PIXELS >= 2 * 2048 * 2048
    assert contract.MAX_REQUEST_PIXELS >= contract.MAX_IMAGE_PIXELS
