"""Subcommands of ``keras-vit``; one module each (see ``keras_vit_cli.main``)."""
