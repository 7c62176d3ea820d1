"""`python -m mlx_diar.convert`: the converter's command line (`mlx_diar.conversion.convert`)."""

from mlx_diar.conversion.convert import convert_pyannote_model, main

__all__ = ["convert_pyannote_model", "main"]

if __name__ == "__main__":
    raise SystemExit(main())
