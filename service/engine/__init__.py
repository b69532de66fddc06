"""The reconstruction engine shared by every entry point: plan (artifact + preparation), batch, run, results."""
