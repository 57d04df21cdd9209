"""Evaluation: the metrics (`metrics`), the fair harness every method goes through (`evaluate`), its CED plots and
tables (`report`), the speed benchmark against dlib (`bench`, each measurement in a fresh `bench_child` process)
and the generated status table (`status`)."""
