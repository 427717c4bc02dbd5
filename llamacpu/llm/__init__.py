"""The language-model side: model loading (the tiny Llama and pretrained ones), the
controller (prompt encoders, plan and execute heads) and the weight-token channel.
"""
