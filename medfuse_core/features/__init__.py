"""Model inputs built from a `PatientRecord`: one module per modality, plus batch collation."""
