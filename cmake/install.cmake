# install rules: see issue 7
