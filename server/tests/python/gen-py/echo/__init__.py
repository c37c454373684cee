__all__ = ['ttypes', 'constants', 'EchoServer']
